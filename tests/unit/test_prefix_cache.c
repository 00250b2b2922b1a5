/*
 * The prefix cache against a plain reference: prompts drawn from a few
 * families that share prefixes; every block handed back by a match must
 * hold exactly the prefix it stands for (a record of what each block was
 * computed from), matches must be the longest cached prefix (checked
 * against a list of inserted prefixes while nothing is evicted), eviction
 * must take only blocks nobody else holds, leaves first, least recently
 * used first.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/block_pool.h"
#include "check.h"
#include "model/kv.h"
#include "serve/prefix_cache.h"

#define B SG_KV_BLOCK

/* What each block was computed from: the prefix ending with it. */
typedef struct block_record {
    int32_t *prefix;
    int      len;
} block_record;

static block_record *records;

static void
record_block(int32_t id, const int32_t *tokens, int len)
{
    free(records[id].prefix);
    records[id].prefix = malloc(sizeof(int32_t) * len);
    memcpy(records[id].prefix, tokens, sizeof(int32_t) * len);
    records[id].len = len;
}

static int
block_holds(int32_t id, const int32_t *tokens, int len)
{
    return records[id].len == len
        && memcmp(records[id].prefix, tokens, sizeof(int32_t) * len) == 0;
}

/* A prompt: family f's shared prefix of f_len tokens, then random ids. */
static void
make_prompt(int32_t *t, int n, const int32_t *family, int f_len)
{
    for (int i = 0; i < n; i++)
        t[i] = i < f_len ? family[i] : (int32_t)(check_rand32() % 50);
}

/*
 * "Computes" a prompt like a sequence would: matches, allocates blocks for
 * the rest (evicting when the pool is empty), records their content,
 * inserts, and returns its block table (the caller releases it).
 */
static int
run_sequence(sg_block_pool *p, sg_prefix_cache *pc, int32_t ns,
    const int32_t *t, int n, int32_t *blocks, int *hit, int *ok)
{
    int full = n / B, nb = (n + B - 1) / B;
    int h = sg_prefix_cache_match(pc, ns, t, n, full, blocks);

    for (int i = 0; i < h; i++)
        *ok &= block_holds(blocks[i], t, (i + 1) * B);
    for (int i = h; i < nb; i++) {
        if (p->n_free == 0)
            sg_prefix_cache_evict_one(pc);
        blocks[i] = sg_block_alloc(p);
        if (blocks[i] < 0) {
            for (int j = 0; j < i; j++)
                sg_block_unref(p, blocks[j]);
            return -1;
        }
        record_block(blocks[i], t, i + 1 < nb || n % B == 0 ? (i + 1) * B : n);
    }
    *ok &= sg_prefix_cache_insert(pc, ns, t, full, blocks, h) == full;
    *hit = h;
    return nb;
}

static void
release(sg_block_pool *p, int32_t *blocks, int nb)
{
    for (int i = 0; i < nb; i++)
        sg_block_unref(p, blocks[i]);
}

/* Longest prefix (in full blocks) of t shared with any inserted prompt. */
static int
reference_match(int32_t **seen, int *seen_len, int *seen_ns, int n_seen,
    const int32_t *t, int n, int ns)
{
    int best = 0;

    for (int s = 0; s < n_seen; s++) {
        int k = 0;
        if (seen_ns[s] != ns)
            continue;                   /* another tenant's prompt */
        while ((k + 1) * B <= n && (k + 1) * B <= seen_len[s]
               && memcmp(seen[s] + k * B, t + k * B, sizeof(int32_t) * B) == 0)
        {
            k++;
        }
        if (k > best)
            best = k;
    }
    return best;
}

/* Random rounds; with tenants > 0 each prompt belongs to one of them
 * (salts "tenant-0".. and the shared namespace), and a match must be the
 * longest prefix among that tenant's prompts only. */
static void
test_random(int n_blocks, int rounds, const char *name, int check_longest,
    int tenants)
{
    enum { FAMILIES = 4, MAXLEN = 8 * B };
    sg_block_pool    p;
    sg_prefix_cache *pc;
    int32_t          family[FAMILIES][MAXLEN];
    int32_t        **seen = calloc(rounds, sizeof(int32_t *));
    int             *seen_len = calloc(rounds, sizeof(int));
    int             *seen_ns = calloc(rounds, sizeof(int));
    int32_t          held[3][MAXLEN / B + 1];
    int              held_n[3] = {0}, ok = 1, longest = 1, hits = 0;
    char             err[200] = "", nm[96];

    records = calloc(n_blocks, sizeof(block_record));
    sg_block_pool_init(&p, n_blocks);
    pc = sg_prefix_cache_new(&p);
    for (int f = 0; f < FAMILIES; f++)
        for (int i = 0; i < MAXLEN; i++)
            family[f][i] = check_rand32() % 50;

    for (int r = 0; r < rounds && ok; r++) {
        int32_t t[MAXLEN], blocks[MAXLEN / B + 1];
        int     n = 1 + check_rand32() % MAXLEN;
        int     f = check_rand32() % FAMILIES;
        int     f_len = check_rand32() % (MAXLEN + 1);
        int     slot = check_rand32() % 3, nb, h, want, tenant;
        char    salt[32];
        int32_t ns = 0;

        /* a request holds its namespace while it runs */
        tenant = tenants ? (int)(check_rand32() % (tenants + 1)) : 0;
        if (tenant > 0) {
            snprintf(salt, sizeof(salt), "tenant-%d", tenant);
            ns = sg_prefix_cache_ns_get(pc, salt, strlen(salt));
        }
        make_prompt(t, n, family[f], f_len);
        want = reference_match(seen, seen_len, seen_ns, r, t, n, tenant);
        /* Up to three sequences stay in flight: their blocks must
         * survive any eviction. */
        release(&p, held[slot], held_n[slot]);
        held_n[slot] = 0;
        nb = run_sequence(&p, pc, ns, t, n, blocks, &h, &ok);
        sg_prefix_cache_ns_put(pc, ns);
        if (nb < 0)
            continue;
        hits += h > 0;
        if (check_longest && h != (want < n / B ? want : n / B))
            longest = 0;
        memcpy(held[slot], blocks, sizeof(int32_t) * nb);
        held_n[slot] = nb;
        for (int s = 0; s < 3; s++)
            for (int i = 0; i < held_n[s]; i++)
                ok &= sg_block_refcount(&p, held[s][i]) >= 1;
        seen[r] = malloc(sizeof(int32_t) * n);
        memcpy(seen[r], t, sizeof(int32_t) * n);
        seen_len[r] = n;
        seen_ns[r] = tenant;
        if (sg_prefix_cache_check(pc, err, sizeof(err)) != 0
            || sg_prefix_cache_check_ns(pc, 0, err, sizeof(err)) != 0
            || sg_block_pool_check(&p, err, sizeof(err)) != 0)
        {
            ok = 0;
        }
    }
    snprintf(nm, sizeof(nm), "%s_blocks_hold_their_prefix", name);
    CHECK(ok, nm, "a hit returned a block of other content or the tree "
          "broke: %s", err);
    snprintf(nm, sizeof(nm), "%s_hits_happen", name);
    CHECK(hits > rounds / 10, nm, "only %d hits in %d rounds", hits, rounds);
    if (check_longest) {
        snprintf(nm, sizeof(nm), "%s_match_is_longest_prefix", name);
        CHECK(longest, nm, "a match differs from the reference");
    }

    for (int s = 0; s < 3; s++)
        release(&p, held[s], held_n[s]);
    snprintf(nm, sizeof(nm), "%s_only_cache_holds_after_release", name);
    CHECK(sg_prefix_cache_evictable(pc) == sg_prefix_cache_nodes(pc)
          && sg_block_pool_used(&p) == sg_prefix_cache_nodes(pc), nm,
          "%d used, %d nodes, %d evictable", sg_block_pool_used(&p),
          sg_prefix_cache_nodes(pc), sg_prefix_cache_evictable(pc));
    while (sg_prefix_cache_evict_one(pc))
        ;
    snprintf(nm, sizeof(nm), "%s_evicts_down_to_empty", name);
    CHECK(sg_prefix_cache_nodes(pc) == 0 && p.n_free == n_blocks
          && sg_prefix_cache_namespaces(pc) == 0, nm,
          "%d nodes, %d free blocks and %d namespaces left",
          sg_prefix_cache_nodes(pc), p.n_free,
          sg_prefix_cache_namespaces(pc));

    sg_prefix_cache_free(pc);
    sg_block_pool_destroy(&p);
    for (int i = 0; i < n_blocks; i++)
        free(records[i].prefix);
    free(records);
    for (int r = 0; r < rounds; r++)
        free(seen[r]);
    free(seen);
    free(seen_len);
    free(seen_ns);
}

/* Scripted: LRU order, leaves first, in-use blocks kept, partial blocks
 * never matched, and a second copy of a cached prefix folded into one. */
static void
test_scripted(void)
{
    sg_block_pool    p;
    sg_prefix_cache *pc;
    int32_t          a[3 * B], b[3 * B], ba[3], bb[3], m[3];
    int              ok;

    records = calloc(16, sizeof(block_record));
    sg_block_pool_init(&p, 16);
    pc = sg_prefix_cache_new(&p);
    for (int i = 0; i < 3 * B; i++) {
        a[i] = check_rand32() % 1000;
        b[i] = i < B ? a[i] : a[i] + 1;    /* shares block 0 with a */
    }
    ok = 1;
    int h;
    run_sequence(&p, pc, 0, a, 3 * B, ba, &h, &ok);
    run_sequence(&p, pc, 0, b, 3 * B, bb, &h, &ok);
    CHECK(h == 1 && bb[0] == ba[0] && ok, "cache_shares_common_first_block",
          "hit %d blocks", h);
    release(&p, ba, 3);
    release(&p, bb, 3);
    CHECK(sg_prefix_cache_nodes(pc) == 5, "cache_tree_has_five_nodes",
          "%d nodes", sg_prefix_cache_nodes(pc));

    /* Use a again: b's blocks become the least recently used. */
    CHECK(sg_prefix_cache_match(pc, 0, a, 3 * B, 3, m) == 3, "cache_full_hit",
          "a not fully cached");
    release(&p, m, 3);
    sg_prefix_cache_evict_one(pc);
    sg_prefix_cache_evict_one(pc);
    CHECK(sg_prefix_cache_match(pc, 0, b, 3 * B, 3, m) == 1,
          "cache_evicts_lru_leaves_first", "b's blocks survived eviction");
    release(&p, m, 1);
    CHECK(sg_prefix_cache_match(pc, 0, a, 3 * B, 3, m) == 3,
          "cache_keeps_recently_used", "a lost blocks");

    /* While a's blocks are held, nothing can be evicted. */
    CHECK(sg_prefix_cache_evict_one(pc) == 0 && sg_prefix_cache_nodes(pc) == 3,
          "cache_never_evicts_held_blocks", "%d nodes",
          sg_prefix_cache_nodes(pc));
    release(&p, m, 3);

    /* A partial block never matches, even when its tokens agree. */
    CHECK(sg_prefix_cache_match(pc, 0, a, 3 * B - 1, 3, m) == 2,
          "cache_partial_block_not_matched", "matched a partial block");
    release(&p, m, 2);

    /* The same prefix computed twice keeps one copy. */
    {
        int32_t c[2];
        c[0] = sg_block_alloc(&p);
        c[1] = sg_block_alloc(&p);
        int before = sg_block_pool_used(&p);
        sg_prefix_cache_insert(pc, 0, a, 2, c, 0);
        CHECK(c[0] == m[0] && c[1] == m[1]
              && sg_block_pool_used(&p) == before - 2,
              "cache_folds_duplicate_prefix", "kept two copies");
        release(&p, c, 2);
    }
    char err[200] = "";
    CHECK(sg_prefix_cache_check(pc, err, sizeof(err)) == 0
          && sg_block_pool_check(&p, err, sizeof(err)) == 0,
          "cache_scripted_invariants", "%s", err);
    sg_prefix_cache_free(pc);
    CHECK(p.n_free == 16, "cache_free_releases_blocks", "%d free", p.n_free);
    sg_block_pool_destroy(&p);
    for (int i = 0; i < 16; i++)
        free(records[i].prefix);
    free(records);
}

/* Two tenants send the same prompt: neither hits the other's blocks (the
 * cross-tenant leak: one could confirm the other's prompt by its cached
 * tokens), each hits its own; one salt is one namespace, kept once. */
static void
test_namespaces(void)
{
    sg_block_pool    p;
    sg_prefix_cache *pc;
    int32_t          t[4 * B], ba[4], bb[4], bc[4], m[4];
    int              ok = 1, h;
    int32_t          na, nb, na2;
    char             err[200] = "";

    records = calloc(64, sizeof(block_record));
    sg_block_pool_init(&p, 64);
    pc = sg_prefix_cache_new(&p);
    for (int i = 0; i < 4 * B; i++)
        t[i] = check_rand32() % 1000;
    na = sg_prefix_cache_ns_get(pc, "key-a", 5);
    nb = sg_prefix_cache_ns_get(pc, "key-b", 5);
    na2 = sg_prefix_cache_ns_get(pc, "key-a", 5);
    CHECK(na > 0 && nb > 0 && na != nb && na2 == na
          && sg_prefix_cache_namespaces(pc) == 2
          && sg_prefix_cache_ns_get(pc, "", 0) == 0, "cache_ns_interned",
          "ids %d %d %d, %d live", na, nb, na2,
          sg_prefix_cache_namespaces(pc));
    sg_prefix_cache_ns_put(pc, na2);
    run_sequence(&p, pc, na, t, 4 * B, ba, &h, &ok);
    run_sequence(&p, pc, nb, t, 4 * B, bb, &h, &ok);
    CHECK(h == 0 && ok, "cache_ns_other_tenant_misses",
          "tenant b hit %d blocks of tenant a's prompt", h);
    run_sequence(&p, pc, 0, t, 4 * B, bc, &h, &ok);
    CHECK(h == 0, "cache_ns_shared_misses_tenants", "hit %d blocks", h);
    h = sg_prefix_cache_match(pc, na, t, 4 * B, 4, m);
    CHECK(h == 4 && m[0] == ba[0], "cache_ns_own_tenant_hits",
          "tenant a hit %d blocks", h);
    release(&p, m, h);
    release(&p, ba, 4);
    release(&p, bb, 4);
    release(&p, bc, 4);
    CHECK(sg_prefix_cache_check(pc, err, sizeof(err)) == 0
          && sg_prefix_cache_check_ns(pc, 2, err, sizeof(err)) == 0,
          "cache_ns_invariants", "%s", err);
    sg_prefix_cache_ns_put(pc, na);
    sg_prefix_cache_ns_put(pc, nb);
    /* the nodes keep their namespaces until evicted */
    CHECK(sg_prefix_cache_namespaces(pc) == 2, "cache_ns_held_by_nodes",
          "%d live", sg_prefix_cache_namespaces(pc));
    while (sg_prefix_cache_evict_one(pc))
        ;
    CHECK(sg_prefix_cache_namespaces(pc) == 0
          && sg_prefix_cache_check_ns(pc, 0, err, sizeof(err)) == 0,
          "cache_ns_freed_with_last_node", "%d live: %s",
          sg_prefix_cache_namespaces(pc), err);
    /* many namespaces: the table grows and shrinks back */
    {
        int32_t ids[300];
        int     distinct = 1;
        char    salt[16];

        for (int i = 0; i < 300; i++) {
            snprintf(salt, sizeof(salt), "s%d", i);
            ids[i] = sg_prefix_cache_ns_get(pc, salt, strlen(salt));
            for (int j = 0; j < i; j++)
                distinct &= ids[j] != ids[i];
        }
        for (int i = 0; i < 300; i++)
            sg_prefix_cache_ns_put(pc, ids[i]);
        CHECK(distinct && sg_prefix_cache_namespaces(pc) == 0,
              "cache_ns_many", "distinct %d, %d live", distinct,
              sg_prefix_cache_namespaces(pc));
    }
    sg_prefix_cache_free(pc);
    sg_block_pool_destroy(&p);
    for (int i = 0; i < 64; i++)
        free(records[i].prefix);
    free(records);
}

int
main(void)
{
    check_seed_from_env();
    test_scripted();
    test_namespaces();
    /* Roomy pool: nothing is evicted, so matches must be the longest. */
    test_random(4096, 400, "roomy", 1, 0);
    /* Tight pool: constant eviction with sequences in flight. */
    test_random(40, 2000, "tight", 0, 0);
    /* Tenants: matches within each one's own prompts only. */
    test_random(4096, 400, "tenants", 1, 3);
    test_random(40, 2000, "tenants_tight", 0, 3);
    return check_finish();
}
