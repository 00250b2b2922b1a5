/*
 * The gateway benchmark's middle row: the same engine the nginx module runs,
 * called directly through libsparsegate's serving API (no HTTP, no JSON),
 * with the same request as bench/gateway.sh sends (a prompt of given ids,
 * max_tokens 1, greedy) and the same number of requests in flight.
 *
 *   gateway_direct MODEL_DIR SECONDS CONCURRENCY THREADS ID...
 *
 * Prints "requests_per_s p50_ms p99_ms count".
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "sparsegate.h"

static double
now_s(void)
{
    struct timespec ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

static int
cmp_double(const void *a, const void *b)
{
    double x = *(const double *) a, y = *(const double *) b;

    return (x > y) - (x < y);
}

int
main(int argc, char **argv)
{
    char            err[256];
    int             conc, n_ids, inflight = 0, i, n;
    double          secs, t0, t_end, *lat, *start;
    size_t          n_lat = 0, cap_lat = 1 << 16;
    int32_t        *ids;
    uint64_t        id;
    sg_engine      *e;
    sg_engine_opts  o;
    sg_request      req;
    sg_event        ev[64];
    struct pollfd   pfd;

    if (argc < 6) {
        fprintf(stderr, "usage: gateway_direct MODEL_DIR SECONDS CONCURRENCY"
                " THREADS ID...\n");
        return 2;
    }
    secs = atof(argv[2]);
    conc = atoi(argv[3]);
    n_ids = argc - 5;
    if (secs <= 0 || conc < 1 || conc > 1024) {
        fprintf(stderr, "gateway_direct: bad SECONDS or CONCURRENCY\n");
        return 2;
    }
    ids = malloc(n_ids * sizeof(int32_t));
    lat = malloc(cap_lat * sizeof(double));
    start = calloc(conc, sizeof(double));
    if (ids == NULL || lat == NULL || start == NULL) {
        fprintf(stderr, "gateway_direct: out of memory\n");
        return 1;
    }
    for (i = 0; i < n_ids; i++) {
        ids[i] = atoi(argv[5 + i]);
    }

    sg_engine_opts_default(&o);
    o.model_dir = argv[1];
    o.n_threads = atoi(argv[4]);
    o.kv_bytes = 256u << 20;
    o.prefix_cache = 1;
    if (sg_engine_start(&o, &e, err, sizeof(err)) != 0) {
        fprintf(stderr, "gateway_direct: %s\n", err);
        return 1;
    }

    memset(&req, 0, sizeof(req));
    req.prompt = ids;
    req.n_prompt = n_ids;
    req.max_tokens = 1;
    req.temperature = 0;
    req.top_p = 1;
    req.ignore_eos = 1;

    t0 = now_s();
    t_end = t0 + secs;
    pfd.fd = sg_engine_fd(e);
    pfd.events = POLLIN;

    for (;;) {
        /* keep CONCURRENCY requests in flight until the time is up; the
         * slot index travels in the user pointer */
        while (inflight < conc && now_s() < t_end) {
            for (i = 0; i < conc && start[i] != 0; i++) { /* void */ }
            req.user = (void *) (intptr_t) i;
            if (sg_engine_submit(e, &req, &id, err, sizeof(err)) != SG_OK) {
                fprintf(stderr, "gateway_direct: submit: %s\n", err);
                sg_engine_stop(e);
                return 1;
            }
            start[i] = now_s();
            inflight++;
        }
        if (inflight == 0) {
            break;
        }
        if (poll(&pfd, 1, 10000) < 0 && errno != EINTR) {
            perror("gateway_direct: poll");
            break;
        }
        while ((n = sg_engine_drain(e, ev, 64)) > 0) {
            for (i = 0; i < n; i++) {
                int slot = (int) (intptr_t) ev[i].user;

                if (ev[i].kind == SG_EV_TOKEN) {
                    continue;
                }
                if (ev[i].kind == SG_EV_ERROR) {
                    fprintf(stderr, "gateway_direct: %s\n", ev[i].message);
                }
                if (n_lat < cap_lat) {
                    lat[n_lat++] = now_s() - start[slot];
                }
                start[slot] = 0;
                inflight--;
            }
        }
    }

    secs = now_s() - t0;
    qsort(lat, n_lat, sizeof(double), cmp_double);
    printf("%.1f %.2f %.2f %zu\n", n_lat / secs,
           n_lat ? lat[n_lat / 2] * 1e3 : 0,
           n_lat ? lat[(size_t) (n_lat * 0.99)] * 1e3 : 0, n_lat);

    sg_engine_stop(e);
    free(ids);
    free(lat);
    free(start);
    return 0;
}
