/*
 * A blocking driver for async queries (poll(2) on the query's fd until it
 * is done or its deadline passes): what the CLI, tests and benchmarks use
 * to run the same code path the nginx worker runs from its event loop.
 */
#ifndef SG_AWAIT_H
#define SG_AWAIT_H

#include "store.h"

/* Steps q to completion; returns sg_aquery_result()'s code. */
int sg_aquery_wait(sg_aquery *q, sg_passage_list *out, char *err,
    int errlen);

#endif
