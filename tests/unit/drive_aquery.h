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

#endif
