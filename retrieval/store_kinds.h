/*
 * The store implementations' constructors: each kind defines its own; the
 * factory (store.c) is their only caller, the one place that picks a kind.
 */
#ifndef SG_STORE_KINDS_H
#define SG_STORE_KINDS_H

#include "store.h"

/* rw: opened to ingest (the schema created or upgraded), else to read. */
int sg_sqlite_open(const char *path, int rw, sg_store **out, char *err,
    int errlen);
int sg_pg_open(const char *conninfo, int rw, sg_store **out, char *err,
    int errlen);
int sg_redis_open(const char *hostport, int rw, sg_store **out, char *err,
    int errlen);
int sg_sqlite_aopen(const char *path, sg_astore **out, char *err,
    int errlen);
int sg_pg_aopen(const char *conninfo, sg_astore **out, char *err,
    int errlen);
int sg_redis_aopen(const char *hostport, sg_astore **out, char *err,
    int errlen);

#endif
