#define _GNU_SOURCE     /* memmem */
/*
 * The context builder (see context.h for the layout and why).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "context.h"

static const char default_system[] =
    "You are a careful assistant. Answer the question using only the "
    "passages below. Cite the passages you use by their id in square "
    "brackets, like [passage ID]. If the passages do not contain the "
    "answer, say so.";

static const char passages_head[] = "Passages:\n\n";
static const char question_head[] = "Question: ";

void
sg_ctx_opts_default(sg_ctx_opts *o)
{
    memset(o, 0, sizeof(*o));
    o->budget = SG_CTX_BUDGET;
    o->shared_fraction = SG_CTX_SHARED_FRACTION;
}

static int
ctx_err(char *err, int errlen, const char *msg)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "context: %s", msg);
    return -1;
}

char *
sg_ctx_block(const sg_passage *p, size_t *len)
{
    const char *title = p->title ? p->title : "";
    size_t      n = strlen(p->id) + strlen(p->doc_id) + strlen(title)
                    + strlen(p->text) + 32;
    char       *s = malloc(n);
    int         w;

    if (s == NULL)
        return NULL;
    w = snprintf(s, n, "[passage %s | doc %s | %s]\n%s\n\n", p->id,
                 p->doc_id, title, p->text);
    if (len)
        *len = (size_t)w;
    return s;
}

size_t
sg_ctx_common_prefix(const int32_t *a, size_t na, const int32_t *b,
    size_t nb)
{
    size_t i = 0;

    while (i < na && i < nb && a[i] == b[i])
        i++;
    return i;
}

static uint64_t
fnv1a(const char *s, uint64_t salt)
{
    uint64_t h = 1469598103934665603ULL ^ salt;

    for (; *s; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ULL;
    }
    return h ? h : 1;
}

/* An open-addressing map from 64-bit hashes to small ints. */
typedef struct hmap {
    uint64_t *key;
    int      *val;
    size_t    cap;
} hmap;

static int
hmap_init(hmap *m, size_t n)
{
    m->cap = 64;
    while (m->cap < n * 2 + 16)
        m->cap *= 2;
    m->key = calloc(m->cap, sizeof(*m->key));
    m->val = calloc(m->cap, sizeof(*m->val));
    return m->key && m->val ? 0 : -1;
}

static int *
hmap_find(hmap *m, uint64_t k)
{
    for (size_t i = k & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        if (m->key[i] == k)
            return &m->val[i];
        if (m->key[i] == 0)
            return NULL;
    }
}

static void
hmap_put(hmap *m, uint64_t k, int v)
{
    size_t i = k & (m->cap - 1);

    while (m->key[i] != 0 && m->key[i] != k)
        i = (i + 1) & (m->cap - 1);
    m->key[i] = k;
    m->val[i] = v;
}

static void
hmap_free(hmap *m)
{
    free(m->key);
    free(m->val);
}

/* One passage placed in the prompt. */
typedef struct placed {
    sg_passage *p;
    int         rank;      /* in the ranked list, -1 = none */
    int         shared;
} placed;

/* Makes sure p->tokens holds its block's encoding. */
static int
ensure_tokens(sg_passage *p, const sg_ctx_opts *o, int *encoded)
{
    char   *block;
    size_t  len, n = 0;
    int32_t *ids = NULL;

    if (p->tokens != NULL && p->n_tokens >= 0)
        return 0;
    block = sg_ctx_block(p, &len);
    if (block == NULL)
        return -1;
    /* passage text is data: special-token strings in it stay text */
    if (o->encode(o->encode_ud, block, len, 0, &ids, &n) != 0) {
        free(block);
        return -1;
    }
    free(block);
    free(p->tokens);
    p->tokens = ids ? ids : malloc(sizeof(int32_t));
    p->n_tokens = (int)n;
    (*encoded)++;
    return p->tokens ? 0 : -1;
}

static int
cmp_canonical(const void *a, const void *b)
{
    const placed *x = a, *y = b;
    int           c = strcmp(x->p->collection, y->p->collection);

    return c ? c : strcmp(x->p->id, y->p->id);
}

typedef struct buf {
    char   *s;
    size_t  n, cap;
} buf;

static int
buf_add(buf *b, const char *s, size_t n)
{
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        char  *t;

        while (cap < b->n + n + 1)
            cap *= 2;
        t = realloc(b->s, cap);
        if (t == NULL)
            return -1;
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = '\0';
    return 0;
}

typedef struct ibuf {
    int32_t *v;
    size_t   n, cap;
} ibuf;

static int
ibuf_add(ibuf *b, const int32_t *v, size_t n)
{
    if (b->n + n > b->cap) {
        size_t   cap = b->cap ? b->cap : 4096;
        int32_t *t;

        while (cap < b->n + n)
            cap *= 2;
        t = realloc(b->v, cap * sizeof(*t));
        if (t == NULL)
            return -1;
        b->v = t;
        b->cap = cap;
    }
    if (n)
        memcpy(b->v + b->n, v, n * sizeof(*v));
    b->n += n;
    return 0;
}

/* Formats system + user(content) and splits the result around content:
 * *head = everything before it, *tail = everything after. */
static int
format_split(const sg_ctx_opts *o, const char *content, char **prompt,
    size_t *plen, size_t *head_len, size_t *tail_off)
{
    sg_chat_msg      msgs[2];
    sg_ctx_format_fn fmt = o->format ? o->format : sg_chat_format;
    size_t           clen = strlen(content);
    char            *hit = NULL;

    msgs[0].role = "system";
    msgs[0].content = o->system_prompt ? o->system_prompt : default_system;
    msgs[1].role = "user";
    msgs[1].content = content;
    if (fmt(msgs, 2, o->thinking, prompt, plen) != 0)
        return -1;
    /* The template copies content verbatim after the system prompt: find
     * its last occurrence (the system prompt could quote it). */
    for (char *p = *prompt; (p = memmem(p, *plen - (p - *prompt), content,
                                        clen)) != NULL; p++)
        hit = p;
    if (hit == NULL) {
        free(*prompt);
        return -3;
    }
    *head_len = hit - *prompt;
    *tail_off = *head_len + clen;
    return 0;
}

static int
encode_piece(const sg_ctx_opts *o, const char *s, size_t n, int special,
    ibuf *out)
{
    int32_t *ids = NULL;
    size_t   k = 0;
    int      rc;

    if (n == 0)
        return 0;
    if (o->encode(o->encode_ud, s, n, special, &ids, &k) != 0)
        return -1;
    rc = ibuf_add(out, ids, k);
    free(ids);
    return rc;
}

int
sg_context_build(sg_passage_list *shared, sg_passage_list *ranked,
    const char *question, const sg_ctx_opts *o, sg_context *out, char *err,
    int errlen)
{
    char     *skel = NULL, *prompt = NULL, *content = NULL;
    size_t    plen, head_len, tail_off, slen, suffix_len;
    ibuf      head = { 0 }, tail = { 0 }, ids = { 0 };
    buf       text = { 0 };
    hmap      ids_seen = { 0 }, texts_seen = { 0 };
    placed   *S = NULL, *R = NULL;
    size_t    nS = 0, nR = 0, ns_total, nr_total, next_shared = 0;
    long      budget, avail, used = 0, shared_cap;
    double    frac;
    int       rc = -1, f;

    memset(out, 0, sizeof(*out));
    if (o == NULL || o->encode == NULL)
        return ctx_err(err, errlen, "no encoder given");
    if (question == NULL)
        question = "";
    budget = o->budget > 0 ? o->budget : SG_CTX_BUDGET;
    if (o->model_limit > 0 && o->model_limit < budget)
        budget = o->model_limit;
    frac = o->shared_fraction <= 0 ? SG_CTX_SHARED_FRACTION
                                   : o->shared_fraction;
    if (frac > 1)
        frac = 1;
    ns_total = shared ? shared->n : 0;
    nr_total = ranked ? ranked->n : 0;

    /* Head and tail around the passages: from an empty passage list. */
    slen = strlen(passages_head) + strlen(question_head) + strlen(question);
    skel = malloc(slen + 1);
    if (skel == NULL)
        goto oom;
    snprintf(skel, slen + 1, "%s%s%s", passages_head, question_head,
             question);
    f = format_split(o, skel, &prompt, &plen, &head_len, &tail_off);
    if (f != 0) {
        ctx_err(err, errlen, f == -3 ? "chat format did not keep the "
                "message text verbatim" : "chat format failed");
        goto fail;
    }
    /* head = template head + "Passages:\n\n"; tail = question + rest. */
    suffix_len = plen - tail_off;   /* template after the content */
    head_len += strlen(passages_head);
    tail_off = head_len;
    /* The template's own markers are special tokens; the question is
     * text (a question that spells "<｜User｜>" gets no new turn). */
    if (encode_piece(o, prompt, head_len, 1, &head) < 0
        || encode_piece(o, prompt + tail_off, plen - tail_off - suffix_len,
                        0, &tail) < 0
        || encode_piece(o, prompt + plen - suffix_len, suffix_len, 1,
                        &tail) < 0)
    {
        ctx_err(err, errlen, "encoding the prompt template failed");
        goto fail;
    }
    avail = budget - (long)head.n - (long)tail.n;
    if (avail < 0) {
        if (err && errlen > 0)
            snprintf(err, errlen, "context: the question and template take "
                     "%zu tokens, over the budget of %ld",
                     head.n + tail.n, budget);
        goto fail;
    }
    shared_cap = (long)(avail * frac);

    if (hmap_init(&ids_seen, ns_total + nr_total) < 0
        || hmap_init(&texts_seen, ns_total + nr_total) < 0)
        goto oom;
    S = calloc(ns_total + 1, sizeof(*S));
    R = calloc(nr_total + 1, sizeof(*R));
    if (S == NULL || R == NULL)
        goto oom;

    /* 1. The shared block: a canonical prefix of the collection. */
    for (; next_shared < ns_total; next_shared++) {
        sg_passage *p = &shared->v[next_shared];
        uint64_t    hi = fnv1a(p->id, 0), ht = fnv1a(p->text, 7);

        if (hmap_find(&ids_seen, hi) || hmap_find(&texts_seen, ht)) {
            out->dropped_dupes++;
            continue;
        }
        if (ensure_tokens(p, o, &out->encoded) < 0)
            goto enc;
        if (used + p->n_tokens > shared_cap)
            break;
        used += p->n_tokens;
        hmap_put(&ids_seen, hi, (int)nS);
        hmap_put(&texts_seen, ht, 1);
        S[nS++] = (placed){ p, -1, 1 };
    }

    /* 2. The question's passages, best first, those not already in. */
    for (size_t i = 0; i < nr_total; i++) {
        sg_passage *p = &ranked->v[i];
        uint64_t    hi = fnv1a(p->id, 0), ht = fnv1a(p->text, 7);
        int        *at = hmap_find(&ids_seen, hi);

        if (at && *at >= 0 && S[*at].rank < 0
            && strcmp(S[*at].p->id, p->id) == 0)
        {
            S[*at].rank = (int)i;        /* retrieved, already shared */
            S[*at].p->score = p->score;
            continue;
        }
        if (at || hmap_find(&texts_seen, ht)) {
            out->dropped_dupes++;
            continue;
        }
        if (ensure_tokens(p, o, &out->encoded) < 0)
            goto enc;
        if (used + p->n_tokens > avail) {
            out->dropped_budget++;
            continue;
        }
        used += p->n_tokens;
        hmap_put(&ids_seen, hi, -1 - (int)nR);
        hmap_put(&texts_seen, ht, 1);
        R[nR++] = (placed){ p, (int)i, 0 };
    }

    /* 3. Room left: grow the shared block further along the canonical
     * order; a retrieved passage met on the way moves into it. */
    for (; next_shared < ns_total; next_shared++) {
        sg_passage *p = &shared->v[next_shared];
        uint64_t    hi = fnv1a(p->id, 0), ht = fnv1a(p->text, 7);
        int        *at = hmap_find(&ids_seen, hi);

        if (at && *at < 0) {
            size_t r = (size_t)(-1 - *at);

            S[nS] = R[r];
            S[nS].shared = 1;
            R[r].p = NULL;              /* removed below */
            *at = (int)nS++;
            continue;
        }
        if (at || hmap_find(&texts_seen, ht)) {
            out->dropped_dupes++;
            continue;
        }
        if (ensure_tokens(p, o, &out->encoded) < 0)
            goto enc;
        if (used + p->n_tokens > avail)
            break;
        used += p->n_tokens;
        hmap_put(&ids_seen, hi, (int)nS);
        hmap_put(&texts_seen, ht, 1);
        S[nS++] = (placed){ p, -1, 1 };
    }
    {
        size_t k = 0;

        for (size_t i = 0; i < nR; i++)
            if (R[i].p)
                R[k++] = R[i];
        nR = k;
    }
    qsort(R, nR, sizeof(*R), cmp_canonical);

    /* 4. Assemble text and ids: head, shared, retrieved, tail. */
    if (buf_add(&text, prompt, head_len) < 0
        || ibuf_add(&ids, head.v, head.n) < 0)
        goto oom;
    out->cites = calloc(nS + nR + 1, sizeof(*out->cites));
    if (out->cites == NULL)
        goto oom;
    for (size_t i = 0; i < nS + nR; i++) {
        placed      *pl = i < nS ? &S[i] : &R[i - nS];
        sg_passage  *p = pl->p;
        sg_citation *c = &out->cites[out->n_cites];
        char        *block;
        size_t       blen;

        block = sg_ctx_block(p, &blen);
        if (block == NULL || buf_add(&text, block, blen) < 0) {
            free(block);
            goto oom;
        }
        free(block);
        if (ibuf_add(&ids, p->tokens, p->n_tokens) < 0)
            goto oom;
        c->id = strdup(p->id);
        c->doc_id = strdup(p->doc_id);
        c->title = strdup(p->title ? p->title : "");
        c->collection = strdup(p->collection ? p->collection : "");
        out->n_cites++;
        if (!c->id || !c->doc_id || !c->title || !c->collection)
            goto oom;
        c->score = pl->rank >= 0 ? p->score : 0;
        c->rank = pl->rank;
        c->shared = pl->shared;
        c->n_tokens = p->n_tokens;
        if (i + 1 == nS)
            out->prefix_tokens = (int)ids.n;
    }
    if (nS == 0)
        out->prefix_tokens = (int)head.n;
    if (buf_add(&text, prompt + tail_off, plen - tail_off) < 0
        || ibuf_add(&ids, tail.v, tail.n) < 0)
        goto oom;

    /* The assembled text must be what the template makes of the full
     * content: check it (cheap next to encoding). */
    {
        size_t clen = text.n - head_len + strlen(passages_head)
                      - suffix_len;
        char  *p2 = NULL;
        size_t p2len, h2, t2;

        content = malloc(clen + 1);
        if (content == NULL)
            goto oom;
        memcpy(content, text.s + head_len - strlen(passages_head), clen);
        content[clen] = '\0';
        /* content = "Passages:\n\n" + blocks + "Question: " + question */
        if (format_split(o, content, &p2, &p2len, &h2, &t2) != 0
            || p2len != text.n || memcmp(p2, text.s, p2len) != 0)
        {
            free(p2);
            ctx_err(err, errlen, "chat format is not a plain "
                    "concatenation; cannot split the prompt");
            goto fail;
        }
        free(p2);
    }

    out->prompt = text.s;
    out->prompt_len = text.n;
    out->ids = ids.v;
    out->n_tokens = (int)ids.n;
    out->n_shared = (int)nS;
    out->n_retrieved = (int)nR;
    text.s = NULL;
    ids.v = NULL;
    rc = 0;
    goto done;

enc:
    ctx_err(err, errlen, "encoding a passage failed");
    goto fail;
oom:
    ctx_err(err, errlen, "out of memory");
fail:
    sg_context_free(out);
done:
    free(skel);
    free(prompt);
    free(content);
    free(head.v);
    free(tail.v);
    free(ids.v);
    free(text.s);
    free(S);
    free(R);
    hmap_free(&ids_seen);
    hmap_free(&texts_seen);
    return rc;
}

void
sg_context_free(sg_context *c)
{
    for (size_t i = 0; i < c->n_cites; i++) {
        free(c->cites[i].id);
        free(c->cites[i].doc_id);
        free(c->cites[i].title);
        free(c->cites[i].collection);
    }
    free(c->cites);
    free(c->prompt);
    free(c->ids);
    memset(c, 0, sizeof(*c));
}
