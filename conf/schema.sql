-- SparseGate passage store, PostgreSQL (15+), schema 2.  `sparsegate
-- ingest` applies the same statements (retrieval/store_pg.c keeps a copy)
-- when the tables are missing; apply this file yourself to manage the
-- schema separately:
--   psql -v ON_ERROR_STOP=1 -f conf/schema.sql DBNAME
-- Passage and document ids are unique per collection (the keys start with
-- the collection).  A database of schema 1 (before sg_schema: ids unique
-- across the whole store) is read as it is; `sparsegate migrate --store
-- postgres:...` (or the next `sparsegate ingest`) upgrades it in one
-- transaction: the primary keys widened to (collection, id) and
-- (collection, doc_id), the index passages_by_collection dropped (the key
-- serves), sg_schema added.
-- Ids compare in byte order (COLLATE "C") so that the canonical passage
-- order is the same in every store.  Searches rank with
-- ts_rank('{0.1, 0.2, 1.0, 0.5}', tsv, q, 1) over an OR of the question's
-- words (ts_rank_cd with SG_PG_RANK=cd; see retrieval/store_pg.c).
CREATE TABLE IF NOT EXISTS documents (
    doc_id     text COLLATE "C" NOT NULL,
    collection text COLLATE "C" NOT NULL,
    title      text NOT NULL DEFAULT '',
    meta       jsonb,
    PRIMARY KEY (collection, doc_id)
);
CREATE TABLE IF NOT EXISTS passages (
    id         text COLLATE "C" NOT NULL,
    doc_id     text COLLATE "C" NOT NULL,
    collection text COLLATE "C" NOT NULL,
    title      text NOT NULL DEFAULT '',
    text       text NOT NULL,
    meta       jsonb,
    tsv        tsvector GENERATED ALWAYS AS (
                   setweight(to_tsvector('english', title), 'A') ||
                   setweight(to_tsvector('english', text), 'B')) STORED,
    PRIMARY KEY (collection, id)
);
CREATE INDEX IF NOT EXISTS passages_tsv ON passages USING gin (tsv);
CREATE INDEX IF NOT EXISTS passages_by_doc ON passages (doc_id);
CREATE INDEX IF NOT EXISTS passages_meta ON passages USING gin (meta jsonb_path_ops);
CREATE TABLE IF NOT EXISTS sg_schema (version int NOT NULL);
INSERT INTO sg_schema SELECT 2 WHERE NOT EXISTS (SELECT 1 FROM sg_schema);
