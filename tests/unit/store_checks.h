/*
 * What every passage store must do alike, checked on one store by
 * test_{sqlite,pg,redis}_store.c: ids unique per collection (ingest,
 * search, listing, get), a question without searchable terms finding
 * nothing (no error), collection names refused when empty or holding a
 * control character, and a long question (its terms split in the host's
 * thread, at most SG_SEARCH_MAX_TERMS of them) found as a short one is.
 */
#ifndef SG_STORE_CHECKS_H
#define SG_STORE_CHECKS_H

#include "store.h"

/* rw: opened for ingest; as: the same store's async face; kind names the
 * checks ("sqlite" -> "sqlite_ids_per_collection", ...). */
void store_checks(sg_store *rw, sg_astore *as, const char *kind);

#endif
