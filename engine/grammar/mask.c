/*
 * Token masks.  For a state, a walk of the sorted vocabulary steps each
 * token's bytes through the automaton (sharing the steps of common
 * prefixes, skipping every token behind a refused prefix) and keeps, per
 * token, how the fewest bytes to finish change if it is chosen.  That
 * table depends on the state only, so it is cached (LRU); the budget is
 * applied when a mask is asked for: a token is allowed when what it leaves
 * to write fits in the tokens left after it.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "grammar_internal.h"
#include "util/err.h"

/* What one byte may change: the lexer, the depth and the frame on top
 * (a push writes a new one above it, a pop leaves the one below as it
 * was). */
typedef struct snap {
    glex      lx;
    uint32_t  depth;
    gframe    top;
} snap;

static void
save(const gstate *s, snap *p)
{
    p->lx = s->lx;
    p->depth = s->depth;
    p->top = s->f[s->depth - 1];
}

static void
restore(gstate *s, const snap *p)
{
    s->lx = p->lx;
    s->depth = p->depth;
    s->f[p->depth - 1] = p->top;
}

sg_grammar *
g_new(const sg_vocab *v, int kind, const sg_grammar_opts *o, char *err,
    int errlen)
{
    sg_grammar *g = calloc(1, sizeof(*g));
    static const char dsml[] = "｜DSML｜";

    if (g == NULL) {
        sg_err(err, errlen, "out of memory");
        return NULL;
    }
    atomic_init(&g->refs, 1);
    pthread_mutex_init(&g->lock, NULL);
    g->v = v;
    g->kind = kind;
    g->table_mask = 255;
    g->table = calloc(g->table_mask + 1, sizeof(gentry *));
    if (g->table == NULL)
        goto oom;
    g_kmp(dsml, (int)sizeof(dsml) - 1, g->d_fail);
    if (o != NULL && o->gate != NULL && o->gate[0] != '\0') {
        g->gate_len = (int)strlen(o->gate);
        if (g->gate_len > 200) {
            sg_err(err, errlen, "the gate marker is too long");
            sg_grammar_unref(g);
            return NULL;
        }
        g->gate = strdup(o->gate);
        g->gate_fail = malloc(sizeof(int) * g->gate_len);
        if (g->gate == NULL || g->gate_fail == NULL)
            goto oom;
        g_kmp(g->gate, g->gate_len, g->gate_fail);
        g->gate_cover = g_cover(g, g->gate, g->gate_len);
        if (g->gate_cover == NULL)
            goto oom;
    }
    return g;
oom:
    sg_err(err, errlen, "out of memory");
    sg_grammar_unref(g);
    return NULL;
}

static void
entry_free(gentry *e)
{
    free(e->key);
    free(e->delta);
    free(e->list);
    free(e->big);
    free(e);
}

sg_grammar *
sg_grammar_ref(sg_grammar *g)
{
    if (g != NULL)
        atomic_fetch_add(&g->refs, 1);
    return g;
}

void
sg_grammar_unref(sg_grammar *g)
{
    gentry *e, *next;

    if (g == NULL || atomic_fetch_sub(&g->refs, 1) != 1)
        return;
    for (e = g->lru_head; e; e = next) {
        next = e->lru_next;
        entry_free(e);
    }
    g_free_parts(g);
    pthread_mutex_destroy(&g->lock);
    free(g->saved);
    free(g->table);
    free(g->gate);
    free(g->gate_fail);
    free(g);
}

int
sg_grammar_min_bytes(const sg_grammar *g)
{
    return g->min_bytes;
}

void
sg_grammar_get_stats(const sg_grammar *g, sg_grammar_stats *st)
{
    pthread_mutex_lock((pthread_mutex_t *)&g->lock);
    st->masks = g->n_masks;
    st->misses = g->n_misses;
    st->cached = g->n_entries;
    pthread_mutex_unlock((pthread_mutex_t *)&g->lock);
}

/* ---------------------------------------------------------- the walk */

static int
add_big(gentry *e, int *cap, int32_t id, int32_t delta)
{
    if (e->n_big == *cap) {
        int      c = *cap ? 2 * *cap : 64;
        int32_t *p = realloc(e->big, sizeof(int32_t) * 2 * c);
        if (p == NULL)
            return -1;
        e->big = p;
        *cap = c;
    }
    e->big[2 * e->n_big] = id;
    e->big[2 * e->n_big + 1] = delta;
    e->n_big++;
    return 0;
}

/* The first token after i (sorted) that does not begin with p[0, n),
 * token i's first n bytes: those that do follow i in one run (a shorter
 * token that begins p sorts before it). */
static int
subtree_end(const sg_vocab *v, int i, const uint8_t *p, int n)
{
    int lo = i + 1, hi = v->n;

    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;

        if (v->len[mid] >= n && memcmp(v->bytes + v->off[mid], p, n) == 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return lo;
}

/* A table that allows few tokens becomes a list of them (and of their
 * exact deltas): states in the middle of DSML's markup or of a property
 * name are many and allow a handful, and lists let the cache hold them
 * all. */
static int
by_id(const void *a, const void *b)
{
    const int32_t *x = a, *y = b;

    return (x[0] > y[0]) - (x[0] < y[0]);
}

static int
to_list(gentry *e, int n_vocab)
{
    int n = 0, k = 0, b = 0;

    /* the big deltas in id order, as the table is read */
    if (e->n_big > 1)
        qsort(e->big, e->n_big, 2 * sizeof(int32_t), by_id);
    for (int t = 0; t < n_vocab; t++)
        n += e->delta[t] != 255;
    e->bytes = (size_t)n_vocab + 8 * (size_t)e->n_big;
    if (n > G_SPARSE_MAX)
        return 0;
    e->list = malloc(sizeof(int32_t) * 2 * (n + 1));
    if (e->list == NULL)
        return -1;
    for (int t = 0; t < n_vocab; t++) {
        int d = e->delta[t];
        if (d == 255)
            continue;
        e->list[2 * k] = t;
        e->list[2 * k + 1] = d != 254 ? d - 128 : e->big[2 * b++ + 1];
        k++;
    }
    e->n_list = n;
    free(e->delta);
    free(e->big);
    e->delta = NULL;
    e->big = NULL;
    e->n_big = 0;
    e->bytes = 8 * (size_t)n;
    return 0;
}

static int
walk(const sg_grammar *g, const gstate *start, gentry *e)
{
    const sg_vocab *v = g->v;
    gstate          st = *start;
    snap            sn[65536 / 256];
    snap           *snaps = sn;
    int             level = 0, cap_big = 0, max_len = 0;
    int32_t         need0 = g_need(g, start);

    for (int i = 0; i < v->n; i++) {
        if (v->len[i] > max_len)
            max_len = v->len[i];
    }
    if (max_len > (int)(sizeof(sn) / sizeof(sn[0]))) {
        snaps = malloc(sizeof(snap) * max_len);
        if (snaps == NULL)
            return -1;
    }
    e->need = need0;
    e->delta = malloc((size_t)v->n_vocab);
    if (e->delta == NULL)
        goto oom;
    memset(e->delta, 255, (size_t)v->n_vocab);

    for (int i = 0; i < v->n; i++) {
        const uint8_t *b = (const uint8_t *)v->bytes + v->off[i];
        int            len = v->len[i], ok = 1;
        int32_t        delta;

        while (level > v->lcp[i])
            restore(&st, &snaps[--level]);
        while (level < len) {
            save(&st, &snaps[level]);
            if (!g_step(g, &st, b[level])) {
                restore(&st, &snaps[level]);
                ok = 0;
                break;
            }
            level++;
        }
        if (!ok) {
            /* every token sharing the refused byte's prefix: the sorted
             * run of them ends where a binary search finds */
            i = subtree_end(v, i, b, level + 1) - 1;
            continue;
        }
        delta = g_need(g, &st) - need0;
        if (delta < -128)
            delta = -128;
        if (delta >= 126) {
            e->delta[v->id[i]] = 254;
            if (add_big(e, &cap_big, v->id[i], delta) != 0)
                goto oom;
        } else {
            e->delta[v->id[i]] = (uint8_t)(delta + 128);
        }
    }
    if (v->eos >= 0 && v->eos < v->n_vocab)
        e->delta[v->eos] = need0 == 0 ? 128 : 255;
    if (snaps != sn)
        free(snaps);
    return to_list(e, v->n_vocab);
oom:
    if (snaps != sn)
        free(snaps);
    return -1;
}

static uint64_t
hash_bytes(const uint8_t *p, size_t n)
{
    uint64_t h = 1469598103934665603ull;

    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static void
lru_unlink(sg_grammar *g, gentry *e)
{
    if (e->lru_prev)
        e->lru_prev->lru_next = e->lru_next;
    else
        g->lru_head = e->lru_next;
    if (e->lru_next)
        e->lru_next->lru_prev = e->lru_prev;
    else
        g->lru_tail = e->lru_prev;
    e->lru_prev = e->lru_next = NULL;
}

static void
lru_front(sg_grammar *g, gentry *e)
{
    e->lru_next = g->lru_head;
    e->lru_prev = NULL;
    if (g->lru_head)
        g->lru_head->lru_prev = e;
    g->lru_head = e;
    if (g->lru_tail == NULL)
        g->lru_tail = e;
}

static void
evict(sg_grammar *g)
{
    gentry  *e = g->lru_tail, **pp;

    lru_unlink(g, e);
    for (pp = &g->table[e->hash & g->table_mask]; *pp; pp = &(*pp)->chain) {
        if (*pp == e) {
            *pp = e->chain;
            break;
        }
    }
    g->n_entries--;
    g->cache_bytes -= e->bytes + e->key_len;
    entry_free(e);
}

/* The state's table, from the cache or walked now; NULL when out of
 * memory. */
static gentry *
lookup(sg_grammar *g, const gstate *st)
{
    uint32_t  n = g_state_bytes(st);
    uint64_t  h = hash_bytes((const uint8_t *)st, n);
    gentry   *e;

    g->n_masks++;
    for (e = g->table[h & g->table_mask]; e; e = e->chain) {
        if (e->hash == h && e->key_len == n && memcmp(e->key, st, n) == 0) {
            lru_unlink(g, e);
            lru_front(g, e);
            return e;
        }
    }
    g->n_misses++;
    e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->key = malloc(n);
    if (e->key == NULL || walk(g, st, e) != 0) {
        entry_free(e);
        return NULL;
    }
    memcpy(e->key, st, n);
    e->key_len = n;
    e->hash = h;
    while (g->n_entries > 0
           && g->cache_bytes + e->bytes + n > G_CACHE_BYTES)
        evict(g);
    g->cache_bytes += e->bytes + n;
    e->chain = g->table[h & g->table_mask];
    g->table[h & g->table_mask] = e;
    lru_front(g, e);
    g->n_entries++;
    return e;
}

/* ------------------------------------------------------------ states */

sg_grammar_state *
sg_grammar_state_new(sg_grammar *g)
{
    sg_grammar_state *s = malloc(sizeof(*s));

    if (s == NULL)
        return NULL;
    s->g = sg_grammar_ref(g);
    g_state_init(g, &s->st);
    return s;
}

void
sg_grammar_state_free(sg_grammar_state *s)
{
    if (s == NULL)
        return;
    sg_grammar_unref(s->g);
    free(s);
}

static int mask_locked(sg_grammar_state *s, int tokens_left, float *logits,
    int n_vocab);

int
sg_grammar_mask(sg_grammar_state *s, int tokens_left, float *logits,
    int n_vocab)
{
    int n;

    pthread_mutex_lock(&s->g->lock);
    n = mask_locked(s, tokens_left, logits, n_vocab);
    pthread_mutex_unlock(&s->g->lock);
    return n;
}

static int
mask_locked(sg_grammar_state *s, int tokens_left, float *logits,
    int n_vocab)
{
    sg_grammar *g = s->g;
    gentry     *e = lookup(g, &s->st);
    int         n = n_vocab < g->v->n_vocab ? n_vocab : g->v->n_vocab;
    int         allowed = 0, thr, lim;

    if (e == NULL) {
        for (int t = 0; t < n_vocab; t++)
            logits[t] = -INFINITY;
        return 0;
    }
    /* allowed: what a token leaves to write fits in the tokens after it */
    thr = tokens_left - 1 - e->need;

    if (e->delta == NULL) {
        if (g->saved == NULL
            && (g->saved = malloc(sizeof(float) * G_SPARSE_MAX)) == NULL)
            return 0;
        for (int k = 0; k < e->n_list; k++)
            g->saved[k] = e->list[2 * k] < n ? logits[e->list[2 * k]]
                                             : -INFINITY;
        for (int t = 0; t < n_vocab; t++)
            logits[t] = -INFINITY;
        for (int k = 0; k < e->n_list; k++) {
            if (e->list[2 * k + 1] <= thr && e->list[2 * k] < n) {
                logits[e->list[2 * k]] = g->saved[k];
                allowed++;
            }
        }
        return allowed;
    }

    /* the table: 254 (a big delta) is refused here and its tokens put
     * back below when they fit */
    lim = thr + 128 < 253 ? thr + 128 : 253;
    for (int k = 0; k < e->n_big && k < G_SPARSE_MAX; k++) {
        if (g->saved == NULL
            && (g->saved = malloc(sizeof(float) * G_SPARSE_MAX)) == NULL)
            return 0;
        g->saved[k] = logits[e->big[2 * k]];
    }
    for (int t = 0; t < n; t++) {
        int keep = e->delta[t] <= lim;
        logits[t] = keep ? logits[t] : -INFINITY;
        allowed += keep;
    }
    for (int t = n; t < n_vocab; t++)
        logits[t] = -INFINITY;
    for (int k = 0; k < e->n_big && k < G_SPARSE_MAX; k++) {
        if (e->big[2 * k + 1] <= thr && e->big[2 * k] < n) {
            logits[e->big[2 * k]] = g->saved[k];
            allowed++;
        }
    }
    return allowed;
}

int
sg_grammar_advance(sg_grammar_state *s, int32_t token)
{
    const sg_grammar *g = s->g;
    const sg_vocab   *v = g->v;
    gstate            st;
    int               pos;

    if (token == v->eos)
        return g_need(g, &s->st) == 0 ? 1 : -1;
    if (token < 0 || token >= v->n_vocab || (pos = v->pos_of[token]) < 0)
        return -1;
    st = s->st;
    for (int i = 0; i < v->len[pos]; i++) {
        if (!g_step(g, &st, (uint8_t)v->bytes[v->off[pos] + i]))
            return -1;
    }
    s->st = st;
    return g_done(g, &s->st) ? 1 : 0;
}
