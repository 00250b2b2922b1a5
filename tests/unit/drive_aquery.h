/*
 * Runs an async store query to completion the way an event loop would
 * (poll on its fd, step on readiness or deadline), for the store tests.
 */
#ifndef SG_DRIVE_AQUERY_H
#define SG_DRIVE_AQUERY_H

#include "store.h"

/* Returns the query's result code; *max_step_ms gets the longest step (a
 * step must never block the host). */
int drive_aquery(sg_aquery *q, sg_passage_list *out, char *err, int errlen,
    double *max_step_ms);

/* 1 when sg_astore_collections lists coll with n passages, every name in
 * byte order; else 0 with err saying why. */
int collections_hold(sg_astore *as, const char *coll, long n, char *err,
    int errlen);

#endif
