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

/* The message, and the code (SG_CTX_E*). */
static int
ctx_fail(char *err, int errlen, int code, const char *msg)
{
    if (err && errlen > 0)
        snprintf(err, errlen, "context: %s", msg);
    return code;
}

static int
ctx_err(char *err, int errlen, const char *msg)
{
    return ctx_fail(err, errlen, SG_CTX_EFAIL, msg);
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

/* A passage's identity: its id within its collection. */
static uint64_t
passage_hash(const sg_passage *p)
{
    return fnv1a(p->id, fnv1a(p->collection ? p->collection : "", 3));
}

static int
same_passage(const sg_passage *a, const sg_passage *b)
{
    return strcmp(a->id, b->id) == 0
           && strcmp(a->collection ? a->collection : "",
                     b->collection ? b->collection : "") == 0;
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
    if (o->encode(o->encode_ud, block, len, NULL, 0, &ids, &n) != 0) {
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
 * *head = everything before it, *tail = everything after; *marks lists the
 * template's markers. */
static int
format_split(const sg_ctx_opts *o, const char *content, char **prompt,
    size_t *plen, size_t *head_len, size_t *tail_off, size_t **spans,
    int *n_spans)
{
    sg_chat_msg      msgs[2];
    sg_ctx_format_fn fmt = o->format ? o->format : sg_chat_format_spans;
    size_t           clen = strlen(content);
    char            *hit = NULL;

    msgs[0].role = "system";
    msgs[0].content = o->system_prompt ? o->system_prompt : default_system;
    msgs[1].role = "user";
    msgs[1].content = content;
    if (fmt(msgs, 2, o->thinking, prompt, plen, spans, n_spans) != 0)
        return -1;
    /* The template copies content verbatim after the system prompt: find
     * its last occurrence (the system prompt could quote it). */
    for (char *p = *prompt; (p = memmem(p, *plen - (p - *prompt), content,
                                        clen)) != NULL; p++)
        hit = p;
    if (hit == NULL) {
        free(*prompt);
        free(*spans);
        *prompt = NULL;
        *spans = NULL;
        return -3;
    }
    *head_len = hit - *prompt;
    *tail_off = *head_len + clen;
    return 0;
}

/* Encodes s[from, to) of the prompt with the markers' spans that lie in
 * it. */
static int
encode_piece(const sg_ctx_opts *o, const char *s, size_t from, size_t to,
    const size_t *spans, int n_spans, ibuf *out)
{
    int32_t *ids = NULL;
    size_t   k = 0, *in;
    int      a = 0, b, rc;

    if (to <= from)
        return 0;
    while (a < n_spans && spans[2 * a] < from)
        a++;
    for (b = a; b < n_spans && spans[2 * b + 1] <= to; b++) {
    }
    in = malloc(2 * (size_t)(b - a + 1) * sizeof(*in));
    if (in == NULL)
        return -1;
    for (int i = a; i < b; i++) {
        in[2 * (i - a)] = spans[2 * i] - from;
        in[2 * (i - a) + 1] = spans[2 * i + 1] - from;
    }
    rc = o->encode(o->encode_ud, s + from, to - from, in, b - a, &ids, &k);
    free(in);
    if (rc != 0)
        return -1;
    rc = ibuf_add(out, ids, k);
    free(ids);
    return rc;
}

/* The prompt around the passages: the chat template applied to
 * "Passages:\n\n" + "Question: " + question, cut where the passages go. */
typedef struct skeleton {
    char         *prompt;       /* the formatted text */
    size_t        plen;
    size_t        head_len;     /* template head + "Passages:\n\n" */
    size_t        suffix_len;   /* template after the question */
    size_t       *spans;        /* the template's markers in prompt */
    int           n_spans;
    ibuf          head, tail;   /* the encodings of the two sides */
} skeleton;

static void
skeleton_free(skeleton *k)
{
    free(k->prompt);
    free(k->spans);
    free(k->head.v);
    free(k->tail.v);
}

static int
skeleton_make(const sg_ctx_opts *o, const char *question, skeleton *k,
    char *err, int errlen)
{
    size_t  slen, head_len, tail_off;
    char   *skel;
    int     f;

    slen = strlen(passages_head) + strlen(question_head) + strlen(question);
    skel = malloc(slen + 1);
    if (skel == NULL)
        return ctx_fail(err, errlen, SG_CTX_ENOMEM, "out of memory");
    snprintf(skel, slen + 1, "%s%s%s", passages_head, question_head,
             question);
    f = format_split(o, skel, &k->prompt, &k->plen, &head_len, &tail_off,
                     &k->spans, &k->n_spans);
    free(skel);
    /* the roles are the builder's own: the format fails only for want of
     * memory, or when it does not copy the text (a bug) */
    if (f == -3)
        return ctx_err(err, errlen, "chat format did not keep the message "
                       "text verbatim");
    if (f != 0)
        return ctx_fail(err, errlen, SG_CTX_ENOMEM, "out of memory for the "
                        "chat format");
    k->suffix_len = k->plen - tail_off;
    k->head_len = head_len + strlen(passages_head);
    /* The template's own markers are special tokens; the system prompt
     * and the question are text (a question that spells "<｜User｜>" gets
     * no new turn). */
    if (encode_piece(o, k->prompt, 0, k->head_len, k->spans, k->n_spans,
                     &k->head) < 0
        || encode_piece(o, k->prompt, k->head_len, k->plen, k->spans,
                        k->n_spans, &k->tail) < 0)
        return ctx_fail(err, errlen, SG_CTX_ENOMEM, "out of memory encoding "
                        "the prompt template");
    return 0;
}

/* The passages chosen so far: S the shared block, R the retrieved one.
 * ids_seen maps a passage's hash (collection, id) to its place (i: S[i],
 * -1 - i: R[i]). */
typedef struct chooser {
    const sg_ctx_opts *o;
    sg_context        *out;
    hmap               ids_seen, texts_seen;
    placed            *S, *R;
    size_t             nS, nR;
    long               used;      /* tokens of S and R */
} chooser;

enum { PLACED, DUPLICATE, NO_ROOM, ENCODE_FAILED = -1 };

/*
 * The step every passage takes: one whose id (in its collection) or text
 * is already in the prompt is a duplicate (counted); otherwise it is
 * encoded unless its tokens came cached, and placed when the prompt's
 * passages then still fit in limit tokens: into the shared block when
 * rank < 0, else into the retrieved one.
 */
static int
place(chooser *ch, sg_passage *p, int rank, long limit)
{
    uint64_t hi = passage_hash(p), ht = fnv1a(p->text, 7);

    if (hmap_find(&ch->ids_seen, hi) || hmap_find(&ch->texts_seen, ht)) {
        ch->out->dropped_dupes++;
        return DUPLICATE;
    }
    if (ensure_tokens(p, ch->o, &ch->out->encoded) < 0)
        return ENCODE_FAILED;
    if (ch->used + p->n_tokens > limit)
        return NO_ROOM;
    ch->used += p->n_tokens;
    hmap_put(&ch->texts_seen, ht, 1);
    if (rank < 0) {
        hmap_put(&ch->ids_seen, hi, (int)ch->nS);
        ch->S[ch->nS++] = (placed){ p, -1, 1 };
    } else {
        hmap_put(&ch->ids_seen, hi, -1 - (int)ch->nR);
        ch->R[ch->nR++] = (placed){ p, rank, 0 };
    }
    return PLACED;
}

/*
 * Chooses the passages: (1) the shared block, a canonical prefix of the
 * collection within shared_cap; (2) the question's passages, best first,
 * those not already in, within avail; (3) with room left, the shared block
 * grows further along the canonical order, and a retrieved passage met on
 * the way moves into it.  The retrieved block ends in canonical order.
 * 0, or ENCODE_FAILED.
 */
static int
choose(chooser *ch, sg_passage_list *shared, sg_passage_list *ranked,
    long shared_cap, long avail)
{
    size_t ns = shared ? shared->n : 0, nr = ranked ? ranked->n : 0;
    size_t next = 0, k = 0;
    int    rc;

    for (; next < ns; next++) {
        rc = place(ch, &shared->v[next], -1, shared_cap);
        if (rc == ENCODE_FAILED)
            return rc;
        if (rc == NO_ROOM)
            break;
    }
    for (size_t i = 0; i < nr; i++) {
        sg_passage *p = &ranked->v[i];
        int        *at = hmap_find(&ch->ids_seen, passage_hash(p));

        if (at && *at >= 0 && ch->S[*at].rank < 0
            && same_passage(ch->S[*at].p, p))
        {
            ch->S[*at].rank = (int)i;    /* retrieved, already shared */
            ch->S[*at].p->score = p->score;
            continue;
        }
        rc = place(ch, p, (int)i, avail);
        if (rc == ENCODE_FAILED)
            return rc;
        if (rc == NO_ROOM)
            ch->out->dropped_budget++;
    }
    for (; next < ns; next++) {
        sg_passage *p = &shared->v[next];
        int        *at = hmap_find(&ch->ids_seen, passage_hash(p));

        if (at && *at < 0) {
            size_t r = (size_t)(-1 - *at);

            ch->S[ch->nS] = ch->R[r];
            ch->S[ch->nS].shared = 1;
            ch->R[r].p = NULL;           /* removed below */
            *at = (int)ch->nS++;
            continue;
        }
        rc = place(ch, p, -1, avail);
        if (rc == ENCODE_FAILED)
            return rc;
        if (rc == NO_ROOM)
            break;
    }
    for (size_t i = 0; i < ch->nR; i++)
        if (ch->R[i].p)
            ch->R[k++] = ch->R[i];
    ch->nR = k;
    qsort(ch->R, ch->nR, sizeof(*ch->R), cmp_canonical);
    return 0;
}

static int
cite(sg_citation *c, const placed *pl)
{
    const sg_passage *p = pl->p;

    c->id = strdup(p->id);
    c->doc_id = strdup(p->doc_id);
    c->title = strdup(p->title ? p->title : "");
    c->collection = strdup(p->collection ? p->collection : "");
    c->score = pl->rank >= 0 ? p->score : 0;
    c->rank = pl->rank;
    c->shared = pl->shared;
    c->n_tokens = p->n_tokens;
    return c->id && c->doc_id && c->title && c->collection ? 0 : -1;
}

/* Text and ids: head, shared block, retrieved block, tail; a citation
 * for each passage.  0, or -1 when out of memory. */
static int
assemble(const chooser *ch, const skeleton *k, buf *text, ibuf *ids,
    sg_context *out)
{
    size_t n = ch->nS + ch->nR;

    if (buf_add(text, k->prompt, k->head_len) < 0
        || ibuf_add(ids, k->head.v, k->head.n) < 0)
        return -1;
    out->cites = calloc(n + 1, sizeof(*out->cites));
    if (out->cites == NULL)
        return -1;
    out->prefix_tokens = (int)k->head.n;
    for (size_t i = 0; i < n; i++) {
        const placed *pl = i < ch->nS ? &ch->S[i] : &ch->R[i - ch->nS];
        char         *block;
        size_t        blen;

        block = sg_ctx_block(pl->p, &blen);
        if (block == NULL || buf_add(text, block, blen) < 0) {
            free(block);
            return -1;
        }
        free(block);
        if (ibuf_add(ids, pl->p->tokens, pl->p->n_tokens) < 0)
            return -1;
        out->n_cites++;
        if (cite(&out->cites[i], pl) < 0)
            return -1;
        if (i + 1 == ch->nS)
            out->prefix_tokens = (int)ids->n;
    }
    return buf_add(text, k->prompt + k->head_len, k->plen - k->head_len) < 0
           || ibuf_add(ids, k->tail.v, k->tail.n) < 0 ? -1 : 0;
}

/* The assembled text must be what the template makes of the full content
 * ("Passages:\n\n" + blocks + "Question: " + question): 1 when it is
 * (cheap next to encoding), 0 when not, -1 when out of memory. */
static int
is_template_output(const sg_ctx_opts *o, const skeleton *k, const buf *text)
{
    size_t pre = k->head_len - strlen(passages_head);
    size_t clen = text->n - pre - k->suffix_len;
    char         *content, *p2 = NULL;
    size_t        p2len, h2, t2, *m2 = NULL;
    int           same, n2;

    content = malloc(clen + 1);
    if (content == NULL)
        return -1;
    memcpy(content, text->s + pre, clen);
    content[clen] = '\0';
    same = format_split(o, content, &p2, &p2len, &h2, &t2, &m2, &n2);
    /* the format fails only for want of memory (-1), or not keeping the
     * text (-3: not the template's output) */
    same = same == -1 ? -1
           : same == 0 && p2len == text->n && memcmp(p2, text->s, p2len) == 0;
    free(p2);
    free(m2);
    free(content);
    return same;
}

int
sg_context_build(sg_passage_list *shared, sg_passage_list *ranked,
    const char *question, const sg_ctx_opts *o, sg_context *out, char *err,
    int errlen)
{
    skeleton  k = { 0 };
    chooser   ch = { 0 };
    buf       text = { 0 };
    ibuf      ids = { 0 };
    size_t    n = (shared ? shared->n : 0) + (ranked ? ranked->n : 0);
    long      budget, avail;
    double    frac;
    int       rc = SG_CTX_EFAIL, same;

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

    rc = skeleton_make(o, question, &k, err, errlen);
    if (rc != 0)
        goto fail;
    avail = budget - (long)k.head.n - (long)k.tail.n;
    if (avail < 0) {
        if (err && errlen > 0)
            snprintf(err, errlen, "context: the question and template take "
                     "%zu tokens, over the budget of %ld",
                     k.head.n + k.tail.n, budget);
        rc = SG_CTX_ETOOLONG;
        goto fail;
    }

    ch.o = o;
    ch.out = out;
    ch.S = calloc(n + 1, sizeof(*ch.S));
    ch.R = calloc(n + 1, sizeof(*ch.R));
    if (hmap_init(&ch.ids_seen, n) < 0 || hmap_init(&ch.texts_seen, n) < 0
        || ch.S == NULL || ch.R == NULL)
        goto oom;
    if (choose(&ch, shared, ranked, (long)(avail * frac), avail) != 0) {
        rc = ctx_fail(err, errlen, SG_CTX_ENOMEM, "out of memory encoding "
                      "a passage");
        goto fail;
    }
    if (assemble(&ch, &k, &text, &ids, out) != 0)
        goto oom;
    same = is_template_output(o, &k, &text);
    if (same < 0)
        goto oom;
    if (!same) {
        rc = ctx_err(err, errlen, "chat format is not a plain concatenation; "
                     "cannot split the prompt");
        goto fail;
    }

    out->prompt = text.s;
    out->prompt_len = text.n;
    out->ids = ids.v;
    out->n_tokens = (int)ids.n;
    out->n_shared = (int)ch.nS;
    out->n_retrieved = (int)ch.nR;
    text.s = NULL;
    ids.v = NULL;
    rc = 0;
    goto done;

oom:
    rc = ctx_fail(err, errlen, SG_CTX_ENOMEM, "out of memory");
fail:
    sg_context_free(out);
done:
    skeleton_free(&k);
    free(ids.v);
    free(text.s);
    free(ch.S);
    free(ch.R);
    hmap_free(&ch.ids_seen);
    hmap_free(&ch.texts_seen);
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
