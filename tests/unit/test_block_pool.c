/*
 * The block pool against a plain reference (an array of holder counts):
 * random allocations, extra references and releases, checked after every
 * operation; exhaustion; and the return to the start state.
 */
#include <string.h>

#include "serve/block_pool.h"
#include "check.h"

static int
matches_reference(const sg_block_pool *p, const int *ref, int n)
{
    int free_ref = 0;

    for (int i = 0; i < n; i++) {
        if (sg_block_refcount(p, i) != ref[i])
            return 0;
        free_ref += ref[i] == 0;
    }
    return free_ref == p->n_free;
}

static void
test_random_ops(void)
{
    enum { N = 97, OPS = 20000 };
    sg_block_pool p;
    int           ref[N] = {0}, ok = 1, exhausted = 0, n_allocs = 0;
    char          err[160] = "";

    CHECK(sg_block_pool_init(&p, N) == 0, "pool_init", "init failed");
    for (int op = 0; op < OPS && ok; op++) {
        unsigned kind = check_rand32() % 3;
        int      id = check_rand32() % N;

        if (kind == 0) {
            int32_t got = sg_block_alloc(&p);
            if (got < 0) {
                /* Only when every block has a holder. */
                for (int i = 0; i < N; i++)
                    ok &= ref[i] > 0;
                exhausted++;
            } else {
                ok &= got < N && ref[got] == 0;
                if (got < N)
                    ref[got] = 1;
                n_allocs++;
            }
        } else if (kind == 1 && ref[id] > 0) {
            sg_block_ref(&p, id);
            ref[id]++;
        } else if (kind == 2 && ref[id] > 0) {
            int left = sg_block_unref(&p, id);
            ref[id]--;
            ok &= left == ref[id];
        }
        ok &= matches_reference(&p, ref, N);
        ok &= sg_block_pool_check(&p, err, sizeof(err)) == 0;
    }
    CHECK(ok, "pool_random_ops_match_reference", "diverged: %s", err);
    CHECK(n_allocs > N, "pool_random_ops_reused_blocks",
          "only %d allocations", n_allocs);

    for (int i = 0; i < N; i++)
        while (ref[i] > 0) {
            sg_block_unref(&p, i);
            ref[i]--;
        }
    CHECK(p.n_free == N && sg_block_pool_check(&p, err, sizeof(err)) == 0,
          "pool_back_to_start_state", "%d free of %d: %s", p.n_free, N, err);
    CHECK(exhausted > 0, "pool_random_ops_hit_exhaustion", "never full");
    sg_block_pool_destroy(&p);
}

static void
test_exhaustion(void)
{
    enum { N = 10 };
    sg_block_pool p;
    int32_t       ids[N];
    char          seen[N] = {0};
    int           distinct = 1;

    sg_block_pool_init(&p, N);
    for (int i = 0; i < N; i++) {
        ids[i] = sg_block_alloc(&p);
        if (ids[i] < 0 || ids[i] >= N || seen[ids[i]])
            distinct = 0;
        else
            seen[ids[i]] = 1;
    }
    CHECK(distinct, "pool_allocates_each_block_once", "repeated or bad id");
    CHECK(sg_block_alloc(&p) == -1 && sg_block_pool_used(&p) == N,
          "pool_exhausted_returns_minus_one", "allocated past the end");
    sg_block_ref(&p, ids[3]);
    CHECK(sg_block_unref(&p, ids[3]) == 1 && sg_block_alloc(&p) == -1,
          "pool_shared_block_stays_held", "block freed while still held");
    CHECK(sg_block_unref(&p, ids[3]) == 0 && sg_block_alloc(&p) == ids[3],
          "pool_freed_block_is_reused", "released block not handed out");
    sg_block_pool_destroy(&p);
    CHECK(sg_block_pool_init(&p, 0) == -1, "pool_rejects_zero_blocks",
          "a pool of 0 blocks was created");
}

int
main(void)
{
    check_seed_from_env();
    test_random_ops();
    test_exhaustion();
    return check_finish();
}
