#define _GNU_SOURCE             /* nftw's FTW_PHYS */
#include <pthread.h>
#include "check.h"
#include "util/file.h"

#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

int check_passed;
int check_failed;

void
check_report(int ok, const char *name, const char *fmt, ...)
{
    va_list ap;

    if (ok) {
        check_passed++;
        printf("PASS %s\n", name);
        return;
    }
    check_failed++;
    printf("FAIL %s: ", name);
    va_start(ap, fmt);
    vprintf(fmt, ap);
    va_end(ap);
    printf("\n");
    fflush(stdout);
}

int
check_finish(void)
{
    printf("%d passed, %d failed\n", check_passed, check_failed);
    return check_failed ? 1 : 0;
}

double
check_rel_err(const float *out, const float *ref, size_t n)
{
    double num = 0, den = 0;

    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i]) || !isfinite(ref[i]))
            return INFINITY;
        double d = (double)out[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    if (den == 0)
        return num == 0 ? 0 : INFINITY;
    return sqrt(num / den);
}

double
check_max_abs(const float *out, const float *ref, size_t n)
{
    double m = 0;

    for (size_t i = 0; i < n; i++) {
        if (!isfinite(out[i]) || !isfinite(ref[i]))
            return INFINITY;
        double d = fabs((double)out[i] - ref[i]);
        if (d > m)
            m = d;
    }
    return m;
}

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

/* Seeds from SG_TEST_SEED when set (to replay a failure), else from the
 * clock, and prints the seed so any failure can be reproduced. */
void
check_seed_from_env(void)
{
    const char *s = getenv("SG_TEST_SEED");
    uint64_t seed = s ? strtoull(s, NULL, 0)
                      : (uint64_t)time(NULL) ^ ((uint64_t)clock() << 32);

    rng_state = seed ? seed : 1;
    printf("# seed %llu (set SG_TEST_SEED to replay)\n",
           (unsigned long long)seed);
}

unsigned
check_rand32(void)
{
    /* xorshift64* */
    rng_state ^= rng_state >> 12;
    rng_state ^= rng_state << 25;
    rng_state ^= rng_state >> 27;
    return (unsigned)((rng_state * 0x2545F4914F6CDD1Dull) >> 32);
}

float
check_randu(float lo, float hi)
{
    return lo + (hi - lo) * (check_rand32() / 4294967296.0f);
}

float
check_randn(void)
{
    double u1 = (check_rand32() + 1.0) / 4294967297.0;
    double u2 = check_rand32() / 4294967296.0;

    return (float)(sqrt(-2 * log(u1)) * cos(2 * M_PI * u2));
}

const char *
check_fixtures_dir(void)
{
    const char *d = getenv("SG_FIXTURES");

    return d ? d : "tests/fixtures";
}

void *
check_read_file(const char *path, size_t *len)
{
    return sg_read_file(path, 0, len);
}

const char *
check_named(const char *prefix, const char *what)
{
    static char buf[160];

    snprintf(buf, sizeof(buf), "%s/%s", prefix, what);
    return buf;
}

static int
rm_entry(const char *path, const struct stat *st, int flag, struct FTW *f)
{
    (void)st; (void)flag; (void)f;
    return remove(path);
}

void
check_rm_rf(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

typedef struct {
    void  (*fn)(void *, int);
    void   *ctx;
    int     i;
} thread_arg;

static void *
thread_main(void *p)
{
    thread_arg *a = p;

    a->fn(a->ctx, a->i);
    return NULL;
}

void
check_on_threads(int n, void (*fn)(void *ctx, int i), void *ctx)
{
    pthread_t  t[64];
    thread_arg arg[64];

    for (int i = 0; i < n && i < 64; i++) {
        arg[i].fn = fn;
        arg[i].ctx = ctx;
        arg[i].i = i;
        pthread_create(&t[i], NULL, thread_main, &arg[i]);
    }
    for (int i = 0; i < n && i < 64; i++)
        pthread_join(t[i], NULL);
}


const char *
check_npm_tokenizer(void)
{
    static char  path[1024];
    const char  *root = getenv("SG_ROOT");

    snprintf(path, sizeof(path), "%s/node_modules/@lenml/"
             "tokenizer-deepseek_v3/models/tokenizer.json",
             root ? root : ".");
    return path;
}
