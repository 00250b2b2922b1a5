/*
 * Redis store: the Lua scripts, command building and reply parsing shared
 * by the sync and async faces, and the sync face (CLI, ingest, tests).
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>

#include "store_redis.h"
#include "store_kinds.h"
#include "terms.h"

/* The Lua that names a passage by its collection and id ("%zu:%s:%s" in
 * C: the collection's length first, so no two pairs give one key). */
#define LUA_KEY \
    "local function pkey(c, id) return #c .. ':' .. c .. ':' .. id end\n"

/* A store of schema 1 (keys by id alone) is refused, not misread. */
#define LUA_SCHEMA \
    "if redis.call('GET', 'sg:schema') ~= '2'" \
    " and redis.call('EXISTS', 'sg:colls') == 1 then\n" \
    "  return redis.error_reply('SCHEMA a store of schema 1 (ids unique" \
    " across collections): upgrade it with `sparsegate migrate`')\n" \
    "end\n"

/* ARGV: mode ("q" search / "l" listing), limit, collection or "",
 * filter JSON or "", n doc ids, doc ids..., n terms, terms... */
static const char search_lua[] =
    LUA_SCHEMA LUA_KEY
    "local mode, limit, coll, filt = ARGV[1], tonumber(ARGV[2]), ARGV[3],"
    " ARGV[4]\n"
    "local nd = tonumber(ARGV[5])\n"
    "local docs = nil\n"
    "if nd > 0 then docs = {} for i = 1, nd do docs[ARGV[5 + i]] = true end"
    " end\n"
    "local at = 6 + nd\n"
    "local nt = tonumber(ARGV[at])\n"
    "local f = nil\n"
    "if filt ~= '' then f = cjson.decode(filt) end\n"
    "local colls\n"
    "if coll ~= '' then colls = {coll} else"
    " colls = redis.call('ZRANGE', 'sg:colls', 0, -1) end\n"
    "local out, found = {}, 0\n"
    "local function emit(key, score)\n"
    "  local h = redis.call('HMGET', 'passage:' .. key, 'id', 'doc_id',"
    " 'title', 'text', 'collection', 'meta')\n"
    "  if docs and not docs[h[2]] then return end\n"
    "  if f then\n"
    "    if not h[6] or h[6] == '' then return end\n"
    "    local ok, m = pcall(cjson.decode, h[6])\n"
    "    if ok and type(m) == 'table' then\n"
    "      for k, v in pairs(f) do if m[k] ~= v then return end end\n"
    "    end\n"   /* malformed meta: passed on, the client reports it */
    "  end\n"
    "  out[#out + 1] = h[1] or key\n"
    "  out[#out + 1] = tostring(score)\n"
    "  for i = 2, 6 do out[#out + 1] = h[i] or false end\n"
    "  found = found + 1\n"
    "end\n"
    "if mode == 'l' and docs then\n"
    /* every passage of those documents: the client sorts them in byte
     * order (Lua's < follows the server's locale) and applies the limit */
    "  for _, c in ipairs(colls) do\n"
    "    for i = 1, nd do\n"
    "      for _, key in ipairs(redis.call('SMEMBERS', 'sg:doc:' .."
    " pkey(c, ARGV[5 + i]))) do emit(key, 0) end\n"
    "    end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "if mode == 'l' then\n"
    "  for _, c in ipairs(colls) do\n"
    "    local start = 0\n"
    "    while found < limit do\n"
    "      local keys = redis.call('ZRANGE', 'sg:coll:' .. c, start,"
    " start + 199)\n"
    "      if #keys == 0 then break end\n"
    "      for _, key in ipairs(keys) do\n"
    "        if found < limit then emit(key, 0) end\n"
    "      end\n"
    "      start = start + 200\n"
    "    end\n"
    "    if found >= limit then break end\n"
    "  end\n"
    "  return out\n"
    "end\n"
    "local keys, weights = {}, {}\n"
    "for _, c in ipairs(colls) do\n"
    "  local n = tonumber(redis.call('HGET', 'sg:stats:' .. c, 'n')) or 0\n"
    "  for i = 1, nt do\n"
    "    local k = 'sg:idx:' .. c .. ':' .. ARGV[at + i]\n"
    "    local df = redis.call('ZCARD', k)\n"
    "    if df > 0 then\n"
    "      keys[#keys + 1] = k\n"
    "      weights[#weights + 1] = string.format('%.17g',"
    " math.log(1 + (n - df + 0.5) / (df + 0.5)))\n"
    "    end\n"
    "  end\n"
    "end\n"
    "if #keys == 0 then return out end\n"
    "local tmp = 'sg:tmp:' .. redis.sha1hex(table.concat(ARGV, ' '))\n"
    "local args = {'ZUNIONSTORE', tmp, #keys}\n"
    "for _, k in ipairs(keys) do args[#args + 1] = k end\n"
    "args[#args + 1] = 'WEIGHTS'\n"
    "for _, w in ipairs(weights) do args[#args + 1] = w end\n"
    "redis.call(unpack(args))\n"
    "local start, scanned = 0, 0\n"
    "while found < limit and scanned < 20000 do\n"
    "  local r = redis.call('ZREVRANGE', tmp, start, start + limit * 2 + 49,"
    " 'WITHSCORES')\n"
    "  if #r == 0 then break end\n"
    "  for i = 1, #r, 2 do\n"
    "    if found < limit then emit(r[i], r[i + 1]) end\n"
    "  end\n"
    "  scanned = scanned + #r / 2\n"
    "  start = start + #r / 2\n"
    "end\n"
    "redis.call('DEL', tmp)\n"
    "return out\n";

/* ARGV: id doc title text collection meta dl nterms (term tf)... */
static const char ingest_lua[] =
    LUA_KEY
    "local id, doc, title, text, coll, meta = ARGV[1], ARGV[2], ARGV[3],"
    " ARGV[4], ARGV[5], ARGV[6]\n"
    "local dl, nt = tonumber(ARGV[7]), tonumber(ARGV[8])\n"
    "local key = pkey(coll, id)\n"
    "local pk = 'passage:' .. key\n"
    "local old = redis.call('HMGET', pk, 'doc_id', 'title', 'text', 'meta',"
    " 'dl')\n"
    "if old[1] == doc and old[2] == title and old[3] == text"
    " and old[4] == meta then return 0 end\n"
    "if old[1] then\n"
    "  for _, t in ipairs(redis.call('LRANGE', 'sg:terms:' .. key, 0, -1))"
    " do\n"
    "    redis.call('ZREM', 'sg:idx:' .. coll .. ':' .. t, key)\n"
    "  end\n"
    "  redis.call('SREM', 'sg:doc:' .. pkey(coll, old[1]), key)\n"
    "  redis.call('HINCRBY', 'sg:stats:' .. coll, 'n', -1)\n"
    "  redis.call('HINCRBY', 'sg:stats:' .. coll, 'len',"
    " -(tonumber(old[5]) or 0))\n"
    "  redis.call('DEL', 'sg:terms:' .. key)\n"
    "  if old[1] ~= doc or old[2] ~= title or old[3] ~= text then\n"
    "    for _, k in ipairs(redis.call('SMEMBERS', 'sg:tokkeys:' .. key)) do\n"
    "      redis.call('DEL', k)\n"
    "    end\n"
    "    redis.call('DEL', 'sg:tokkeys:' .. key)\n"
    "  end\n"
    "end\n"
    "redis.call('HSET', pk, 'id', id, 'doc_id', doc, 'title', title, 'text',"
    " text, 'collection', coll, 'meta', meta, 'dl', dl)\n"
    "redis.call('ZADD', 'sg:colls', 0, coll)\n"
    "redis.call('ZADD', 'sg:coll:' .. coll, 0, key)\n"
    "redis.call('SADD', 'sg:doc:' .. pkey(coll, doc), key)\n"
    "local n = redis.call('HINCRBY', 'sg:stats:' .. coll, 'n', 1)\n"
    "local len = redis.call('HINCRBY', 'sg:stats:' .. coll, 'len', dl)\n"
    "local avg = len / n\n"
    "if avg < 1 then avg = 1 end\n"
    "for i = 1, nt do\n"
    "  local t, tf = ARGV[7 + 2 * i], tonumber(ARGV[8 + 2 * i])\n"
    "  local s = tf * 2.2 / (tf + 1.2 * (0.25 + 0.75 * dl / avg))\n"
    "  redis.call('ZADD', 'sg:idx:' .. coll .. ':' .. t,"
    " string.format('%.17g', s), key)\n"
    "  redis.call('RPUSH', 'sg:terms:' .. key, t)\n"
    "end\n"
    "return 1\n";

/* Ingest's connection: schema 2 set on an empty database, or a store of
 * schema 1 (keys by id alone) upgraded in place, ARGV[1] passages a call
 * (each call one atomic step, so Redis serves others between them; the
 * client calls again while it answers 1).  Each passage's keys are renamed
 * to its collection's, its index entries moved, its cached tokens dropped;
 * the collection's listing fills sg:migrating:coll:<c> meanwhile and takes
 * its place when done.  A passage written at schema 2 already (its hash
 * knows its id) is moved as it is, so an interrupted upgrade resumes.
 * Searches refuse the store until sg:schema is set. */
static const char schema_lua[] =
    LUA_KEY
    "local v = redis.call('GET', 'sg:schema')\n"
    "if v then return tonumber(v) end\n"
    "local budget = tonumber(ARGV[1])\n"
    "for _, c in ipairs(redis.call('ZRANGE', 'sg:colls', 0, -1)) do\n"
    " if redis.call('SISMEMBER', 'sg:migrating:done', c) == 0 then\n"
    "  local list, moved = 'sg:coll:' .. c, 'sg:migrating:coll:' .. c\n"
    "  local ids = redis.call('ZRANGE', list, 0, budget - 1)\n"
    "  for _, id in ipairs(ids) do\n"
    "   local key = id\n"
    "   if redis.call('HEXISTS', 'passage:' .. id, 'id') == 0 then\n"
    "    key = pkey(c, id)\n"
    "    local doc = redis.call('HGET', 'passage:' .. id, 'doc_id')\n"
    "    if doc then\n"
    "      redis.call('RENAME', 'passage:' .. id, 'passage:' .. key)\n"
    "      redis.call('HSET', 'passage:' .. key, 'id', id)\n"
    "      redis.call('SREM', 'sg:doc:' .. doc, id)\n"
    "      redis.call('SADD', 'sg:doc:' .. pkey(c, doc), key)\n"
    "    end\n"
    "    local terms = redis.call('LRANGE', 'sg:terms:' .. id, 0, -1)\n"
    "    for _, t in ipairs(terms) do\n"
    "      local k = 'sg:idx:' .. c .. ':' .. t\n"
    "      local sc = redis.call('ZSCORE', k, id)\n"
    "      if sc then\n"
    "        redis.call('ZREM', k, id)\n"
    "        redis.call('ZADD', k, sc, key)\n"
    "      end\n"
    "    end\n"
    "    if #terms > 0 then\n"
    "      redis.call('RENAME', 'sg:terms:' .. id, 'sg:terms:' .. key)\n"
    "    end\n"
    "    for _, k in ipairs(redis.call('SMEMBERS', 'sg:tokkeys:' .. id)) do\n"
    "      redis.call('DEL', k)\n"
    "    end\n"
    "    redis.call('DEL', 'sg:tokkeys:' .. id)\n"
    "   end\n"
    "   redis.call('ZREM', list, id)\n"
    "   redis.call('ZADD', moved, 0, key)\n"
    "  end\n"
    "  budget = budget - #ids\n"
    "  if redis.call('ZCARD', list) == 0 then\n"
    "    if redis.call('EXISTS', moved) == 1 then\n"
    "      redis.call('RENAME', moved, list)\n"
    "    end\n"
    "    redis.call('SADD', 'sg:migrating:done', c)\n"
    "  end\n"
    "  if budget <= 0 then return 1 end\n"
    " end\n"
    "end\n"
    "redis.call('SET', 'sg:schema', '2')\n"
    "redis.call('DEL', 'sg:migrating:done')\n"
    "return 2\n";

/* Passages an upgrade's call moves: two stores of man7 made by schema 1's
 * ingest (13,770 passages) took 18.4 s, and a PING on another connection
 * meanwhile waited 43 ms at the median, 164 ms at most (load average 9;
 * 100 a call: 546 ms at most). */
#define REDIS_MIGRATE_BATCH  25

/* KEYS: tok keys; ARGV: ttl, then per key: value, passage key. */
static const char tokput_lua[] =
    "local ttl = tonumber(ARGV[1])\n"
    "for i = 1, #KEYS do\n"
    "  if ttl > 0 then redis.call('SET', KEYS[i], ARGV[2 * i], 'EX', ttl)\n"
    "  else redis.call('SET', KEYS[i], ARGV[2 * i]) end\n"
    "  redis.call('SADD', 'sg:tokkeys:' .. ARGV[2 * i + 1], KEYS[i])\n"
    "end\n"
    "return #KEYS\n";

int
rcmd_add(rcmd *c, const char *s, size_t n)
{
    if (c->argc == c->cap) {
        int     cap = c->cap ? c->cap * 2 : 16;
        char  **a = realloc(c->argv, cap * sizeof(*a));
        size_t *l;

        if (a == NULL)
            return -1;
        c->argv = a;
        l = realloc(c->len, cap * sizeof(*l));
        if (l == NULL)
            return -1;
        c->len = l;
        c->cap = cap;
    }
    c->argv[c->argc] = malloc(n + 1);
    if (c->argv[c->argc] == NULL)
        return -1;
    memcpy(c->argv[c->argc], s, n);
    c->argv[c->argc][n] = '\0';
    c->len[c->argc++] = n;
    return 0;
}

int
rcmd_addf(rcmd *c, const char *fmt, ...)
{
    char    buf[1200];
    va_list ap;
    int     n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (n < 0 || n >= (int)sizeof(buf))
        return -1;
    return rcmd_add(c, buf, (size_t)n);
}

void
rcmd_free(rcmd *c)
{
    for (int i = 0; i < c->argc; i++)
        free(c->argv[i]);
    free(c->argv);
    free(c->len);
    memset(c, 0, sizeof(*c));
}

static int
add_str(rcmd *c, const char *s)
{
    return rcmd_add(c, s ? s : "", s ? strlen(s) : 0);
}

int
sg_redis_search_cmd(const char *query, const sg_search_opts *o, int terms,
    rcmd *c)
{
    int fail = 0, fts = query && query[0];

    memset(c, 0, sizeof(*c));
    fail |= add_str(c, "EVAL");
    fail |= add_str(c, search_lua);
    fail |= add_str(c, "0");
    fail |= add_str(c, fts ? "q" : "l");
    fail |= rcmd_addf(c, "%d", sg_search_limit(o));
    fail |= add_str(c, o ? o->collection : NULL);
    fail |= add_str(c, o ? o->meta_filter : NULL);
    fail |= rcmd_addf(c, "%d", o ? o->n_doc_ids : 0);
    for (int i = 0; o && i < o->n_doc_ids; i++)
        fail |= add_str(c, o->doc_ids[i]);
    if (!fts)
        fail |= add_str(c, "0");
    else if (terms)
        fail |= sg_redis_search_terms(query, c);
    if (fail) {
        rcmd_free(c);
        return -1;
    }
    return 0;
}

int
sg_redis_search_terms(const char *query, rcmd *c)
{
    sg_terms t;
    int      fail = 0;

    if (sg_terms_split_max(query, SG_SEARCH_MAX_TERMS, &t) < 0)
        return -1;
    fail |= rcmd_addf(c, "%zu", t.n);
    for (size_t i = 0; i < t.n; i++)
        fail |= add_str(c, t.v[i]);
    sg_terms_free(&t);
    return fail ? -1 : 0;
}

int
sg_redis_add_key(rcmd *c, const char *prefix, const sg_passage *p)
{
    return rcmd_addf(c, "%s%zu:%.300s:%.1000s", prefix,
                     strlen(p->collection), p->collection, p->id);
}

int
sg_redis_reply_err(const redisReply *r, const char *what, char *err,
    int errlen)
{
    if (r == NULL)
        return sg_store_err(err, errlen, SG_STORE_EDOWN,
                            "redis: %s: connection lost", what);
    if (r->type == REDIS_REPLY_ERROR)
        return sg_store_err(err, errlen,
                            strncmp(r->str, "BUSY", 4) == 0
                            ? SG_STORE_ETIMEOUT : SG_STORE_EFAIL,
                            "redis: %s: %.200s", what, r->str);
    return sg_store_err(err, errlen, SG_STORE_EBADROW,
                        "redis: %s: unexpected reply type %d", what,
                        r->type);
}

static int
cmp_rank(const void *a, const void *b)
{
    const sg_passage *x = a, *y = b;

    if (x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return strcmp(x->id, y->id);
}

static int
cmp_canonical(const void *a, const void *b)
{
    const sg_passage *x = a, *y = b;
    int               c = strcmp(x->collection, y->collection);

    return c ? c : strcmp(x->id, y->id);
}

int
sg_redis_take_search(const redisReply *r, sg_passage_list *out, int limit,
    char *err, int errlen)
{
    size_t first = out->n;
    int    ranked = 0;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements % 7)
        return sg_redis_reply_err(r && r->type == REDIS_REPLY_ARRAY
                                  ? NULL : r, "search", err, errlen);
    for (size_t i = 0; i < r->elements; i += 7) {
        redisReply *const *e = r->element + i;
        sg_passage        p = { 0 };
        char             *end = NULL;

        for (int k = 0; k < 7; k++) {
            if (k == 6 && e[k]->type == REDIS_REPLY_NIL)
                continue;                         /* no meta */
            if (e[k]->type != REDIS_REPLY_STRING) {
                while (out->n > first)
                    sg_passage_clear(&out->v[--out->n]);
                return sg_store_err(err, errlen, SG_STORE_EBADROW,
                                    "redis: malformed passage %.100s: "
                                    "field %d missing",
                                    e[0]->type == REDIS_REPLY_STRING
                                    ? e[0]->str : "?", k);
            }
        }
        p.id = e[0]->str;
        p.score = strtod(e[1]->str, &end);
        p.doc_id = e[2]->str;
        p.title = e[3]->str;
        p.text = e[4]->str;
        p.collection = e[5]->str;
        p.meta = e[6]->type == REDIS_REPLY_STRING && e[6]->len > 0
                 ? e[6]->str : NULL;
        p.n_tokens = -1;
        if (p.score != 0)
            ranked = 1;
        if (!sg_meta_is_object(p.meta)) {
            while (out->n > first)
                sg_passage_clear(&out->v[--out->n]);
            return sg_store_err(err, errlen, SG_STORE_EBADROW,
                                "redis: malformed passage %.100s: meta is "
                                "not a JSON object", p.id);
        }
        if (sg_passage_list_push(out, &p) != SG_STORE_OK)
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
    }
    /* ZREVRANGE breaks score ties by id descending: make them ascending
     * like the other stores. */
    if (out->n > first)             /* (none: out->v may be NULL) */
        qsort(out->v + first, out->n - first, sizeof(*out->v),
              ranked ? cmp_rank : cmp_canonical);
    while (limit > 0 && out->n - first > (size_t)limit)
        sg_passage_clear(&out->v[--out->n]);
    return SG_STORE_OK;
}

int
sg_redis_tokget_cmd(uint64_t hash, const sg_passage *p, size_t n, rcmd *c)
{
    int fail = 0;

    memset(c, 0, sizeof(*c));
    char pre[32];

    snprintf(pre, sizeof(pre), "tok:%016llx:", (unsigned long long)hash);
    fail |= add_str(c, "MGET");
    for (size_t i = 0; i < n; i++)
        fail |= sg_redis_add_key(c, pre, &p[i]);
    if (fail)
        rcmd_free(c);
    return fail ? -1 : 0;
}

int
sg_redis_take_tokget(const redisReply *r, sg_passage *p, size_t n,
    size_t *hits, char *err, int errlen)
{
    size_t h = 0;

    if (r == NULL || r->type != REDIS_REPLY_ARRAY || r->elements != n)
        return sg_redis_reply_err(r && r->type == REDIS_REPLY_ARRAY
                                  ? NULL : r, "token cache", err, errlen);
    for (size_t i = 0; i < n; i++) {
        const redisReply *e = r->element[i];
        int32_t          *ids;

        if (e->type != REDIS_REPLY_STRING)
            continue;                               /* a miss */
        if (e->len % 4)                             /* not ids: ignore */
            continue;
        ids = malloc(e->len ? e->len : 4);
        if (ids == NULL)
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
        memcpy(ids, e->str, e->len);                /* little-endian host */
        free(p[i].tokens);
        p[i].tokens = ids;
        p[i].n_tokens = (int)(e->len / 4);
        h++;
    }
    if (hits)
        *hits = h;
    return SG_STORE_OK;
}

int
sg_redis_tokput_cmd(uint64_t hash, const sg_passage *p, size_t n,
    int ttl_s, rcmd *c)
{
    int    fail = 0;
    size_t k = 0;

    char   pre[32];

    snprintf(pre, sizeof(pre), "tok:%016llx:", (unsigned long long)hash);
    memset(c, 0, sizeof(*c));
    for (size_t i = 0; i < n; i++)
        k += p[i].tokens != NULL && p[i].n_tokens >= 0;
    fail |= add_str(c, "EVAL");
    fail |= add_str(c, tokput_lua);
    fail |= rcmd_addf(c, "%zu", k);
    for (size_t i = 0; i < n; i++)
        if (p[i].tokens && p[i].n_tokens >= 0)
            fail |= sg_redis_add_key(c, pre, &p[i]);
    fail |= rcmd_addf(c, "%d", ttl_s > 0 ? ttl_s : 0);
    for (size_t i = 0; i < n; i++)
        if (p[i].tokens && p[i].n_tokens >= 0) {
            fail |= rcmd_add(c, (const char *)p[i].tokens,
                             (size_t)p[i].n_tokens * 4);
            fail |= sg_redis_add_key(c, "", &p[i]);
        }
    if (fail)
        rcmd_free(c);
    return fail ? -1 : 0;
}

/* ---- sync store ------------------------------------------------------- */

typedef struct redis_store {
    sg_store      base;
    redisContext *c;
    char          host[256];
    int           port;
} redis_store;

static int sync_connect(redis_store *s, char *err, int errlen);

static int
io_err(redis_store *s, const char *what, char *err, int errlen)
{
    /* hiredis reports a read timeout as EAGAIN's text */
    int timeout = s->c && s->c->err == REDIS_ERR_IO
                  && (errno == EAGAIN || errno == EWOULDBLOCK
                      || strstr(s->c->errstr, "temporarily") != NULL);
    int rc = sg_store_err(err, errlen,
                          timeout ? SG_STORE_ETIMEOUT : SG_STORE_EDOWN,
                          "redis %s:%d: %s: %s", s->host, s->port, what,
                          timeout ? "timed out"
                          : s->c && s->c->errstr[0] ? s->c->errstr
                          : "connection lost");

    /* The connection's state is unknown now: start afresh next time. */
    redisFree(s->c);
    s->c = NULL;
    return rc;
}

redisContext *
sg_redis_sync_ctx(sg_store *st, char *err, int errlen, int *rc)
{
    redis_store *s = (redis_store *)st;

    if (strcmp(st->vt->kind, "redis") != 0) {
        *rc = sg_store_err(err, errlen, SG_STORE_EINVAL,
                           "the token cache needs a redis: store, not %s",
                           st->vt->kind);
        return NULL;
    }
    if (s->c && s->c->err) {            /* died on an earlier call */
        redisFree(s->c);
        s->c = NULL;
    }
    if (s->c == NULL && (*rc = sync_connect(s, err, errlen)) != SG_STORE_OK)
        return NULL;
    *rc = SG_STORE_OK;
    return s->c;
}

static redisReply *
command(redis_store *s, rcmd *cmd, int timeout_ms, const char *what,
    char *err, int errlen, int *rc)
{
    struct timeval tv = { timeout_ms / 1000, (timeout_ms % 1000) * 1000 };
    redisReply    *r;

    if (s->c == NULL && (*rc = sync_connect(s, err, errlen)) != SG_STORE_OK)
        return NULL;
    redisSetTimeout(s->c, tv);
    r = redisCommandArgv(s->c, cmd->argc, (const char **)cmd->argv,
                         cmd->len);
    if (r == NULL) {
        *rc = io_err(s, what, err, errlen);
        return NULL;
    }
    *rc = SG_STORE_OK;
    return r;
}

static int
redis_ingest(sg_store *st, const sg_passage *p, size_t n, char *err,
    int errlen)
{
    redis_store *s = (redis_store *)st;
    redisReply  *r;
    int          rc = SG_STORE_OK;
    struct timeval tv = { 60, 0 };

    if (s->c == NULL && (rc = sync_connect(s, err, errlen)) != SG_STORE_OK)
        return rc;
    redisSetTimeout(s->c, tv);
    /* One MULTI/EXEC per batch: a client killed before EXEC leaves
     * nothing of the batch behind. */
    redisAppendCommand(s->c, "MULTI");
    for (size_t i = 0; i < n && rc == SG_STORE_OK; i++) {
        rcmd     c = { 0 };
        sg_terms t;
        size_t   tl = strlen(p[i].title ? p[i].title : "");
        char    *all = malloc(2 * tl + strlen(p[i].text) + 3);
        int      fail = 0;

        if (all == NULL)
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
        /* the title counts twice, as FTS5's and tsvector's weights do */
        sprintf(all, "%s %s %s", p[i].title ? p[i].title : "",
                p[i].title ? p[i].title : "", p[i].text);
        if (sg_terms_split(all, &t) < 0) {
            free(all);
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
        }
        free(all);
        fail |= add_str(&c, "EVAL");
        fail |= add_str(&c, ingest_lua);
        fail |= add_str(&c, "0");
        fail |= add_str(&c, p[i].id);
        fail |= add_str(&c, p[i].doc_id);
        fail |= add_str(&c, p[i].title);
        fail |= add_str(&c, p[i].text);
        fail |= add_str(&c, p[i].collection);
        fail |= add_str(&c, p[i].meta);
        fail |= rcmd_addf(&c, "%zu", t.total);
        fail |= rcmd_addf(&c, "%zu", t.n);
        for (size_t k = 0; k < t.n; k++) {
            fail |= add_str(&c, t.v[k]);
            fail |= rcmd_addf(&c, "%d", t.tf[k]);
        }
        sg_terms_free(&t);
        if (fail
            || redisAppendCommandArgv(s->c, c.argc, (const char **)c.argv,
                                      c.len) != REDIS_OK)
            rc = sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
        rcmd_free(&c);
    }
    if (rc != SG_STORE_OK) {
        /* Unsent commands sit in the output buffer: drop the connection. */
        redisFree(s->c);
        s->c = NULL;
        return rc;
    }
    redisAppendCommand(s->c, "EXEC");
    for (size_t i = 0; i < n + 2; i++) {
        if (redisGetReply(s->c, (void **)&r) != REDIS_OK)
            return io_err(s, "ingest", err, errlen);
        if (r->type == REDIS_REPLY_ERROR && rc == SG_STORE_OK)
            rc = sg_redis_reply_err(r, "ingest", err, errlen);
        if (i == n + 1 && rc == SG_STORE_OK) {
            if (r->type != REDIS_REPLY_ARRAY)
                rc = sg_redis_reply_err(r, "ingest", err, errlen);
            for (size_t k = 0; rc == SG_STORE_OK && k < r->elements; k++)
                if (r->element[k]->type == REDIS_REPLY_ERROR)
                    rc = sg_redis_reply_err(r->element[k], "ingest", err,
                                            errlen);
        }
        freeReplyObject(r);
    }
    return rc;
}

static int
redis_search(sg_store *st, const char *query, const sg_search_opts *o,
    sg_passage_list *out, char *err, int errlen)
{
    redis_store *s = (redis_store *)st;
    rcmd         c;
    redisReply  *r;
    int          rc;

    if (sg_redis_search_cmd(query, o, 1, &c) < 0)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    r = command(s, &c, sg_search_timeout(o, 0), "search", err, errlen,
                &rc);
    rcmd_free(&c);
    if (r == NULL)
        return rc;
    rc = sg_redis_take_search(r, out, sg_search_limit(o), err, errlen);
    freeReplyObject(r);
    return rc;
}

static int
redis_get(sg_store *st, const char *collection, const char *const *ids,
    size_t n, sg_passage_list *out, char *err, int errlen)
{
    redis_store *s = (redis_store *)st;
    int          rc = SG_STORE_OK;

    for (size_t i = 0; i < n && rc == SG_STORE_OK; i++) {
        rcmd        c = { 0 };
        redisReply *r;
        sg_passage  key = { .id = (char *)ids[i],
                            .collection = (char *)collection };

        if (add_str(&c, "HMGET") || sg_redis_add_key(&c, "passage:", &key)
            || add_str(&c, "doc_id") || add_str(&c, "title")
            || add_str(&c, "text") || add_str(&c, "collection")
            || add_str(&c, "meta"))
        {
            rcmd_free(&c);
            return sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                "out of memory");
        }
        r = command(s, &c, SG_STORE_TIMEOUT_MS, "get", err, errlen, &rc);
        rcmd_free(&c);
        if (r == NULL)
            return rc;
        if (r->type != REDIS_REPLY_ARRAY || r->elements != 5) {
            rc = sg_redis_reply_err(r, "get", err, errlen);
        } else if (r->element[0]->type == REDIS_REPLY_STRING) {
            sg_passage p = { 0 };
            int        ok = 1;

            for (int k = 0; k < 4; k++)
                ok &= r->element[k]->type == REDIS_REPLY_STRING;
            p.id = (char *)ids[i];
            if (ok) {
                p.doc_id = r->element[0]->str;
                p.title = r->element[1]->str;
                p.text = r->element[2]->str;
                p.collection = r->element[3]->str;
                p.meta = r->element[4]->type == REDIS_REPLY_STRING
                         && r->element[4]->len ? r->element[4]->str : NULL;
                p.n_tokens = -1;
            }
            if (!ok || !sg_meta_is_object(p.meta))
                rc = sg_store_err(err, errlen, SG_STORE_EBADROW,
                                  "redis: malformed passage %.100s",
                                  ids[i]);
            else if (sg_passage_list_push(out, &p) != SG_STORE_OK)
                rc = sg_store_err(err, errlen, SG_STORE_ENOMEM,
                                  "out of memory");
        }
        freeReplyObject(r);
    }
    return rc;
}

static long
redis_count(sg_store *st, const char *collection, char *err, int errlen)
{
    redis_store *s = (redis_store *)st;
    redisReply  *r;
    long         total = 0;
    int          rc;
    rcmd         c = { 0 };

    if (collection) {
        add_str(&c, "ZCARD");
        rcmd_addf(&c, "sg:coll:%.1000s", collection);
    } else {
        add_str(&c, "EVAL");
        add_str(&c, "local n = 0 for _, c in ipairs(redis.call('ZRANGE',"
                " 'sg:colls', 0, -1)) do n = n + redis.call('ZCARD',"
                " 'sg:coll:' .. c) end return n");
        add_str(&c, "0");
    }
    r = command(s, &c, SG_STORE_TIMEOUT_MS, "count", err, errlen, &rc);
    rcmd_free(&c);
    if (r == NULL)
        return -1;
    if (r->type == REDIS_REPLY_INTEGER)
        total = (long)r->integer;
    else {
        sg_redis_reply_err(r, "count", err, errlen);
        total = -1;
    }
    freeReplyObject(r);
    return total;
}

static void
redis_close(sg_store *st)
{
    redis_store *s = (redis_store *)st;

    if (s->c)
        redisFree(s->c);
    free(s);
}

static const sg_store_vt redis_vt = {
    "redis", redis_ingest, redis_search, redis_get, redis_count,
    redis_close,
};

static int
sync_connect(redis_store *s, char *err, int errlen)
{
    struct timeval tv = { 5, 0 };

    s->c = redisConnectWithTimeout(s->host, s->port, tv);
    if (s->c == NULL || s->c->err) {
        int rc = sg_store_err(err, errlen, SG_STORE_EDOWN,
                              "redis %s:%d: cannot connect: %s", s->host,
                              s->port, s->c ? s->c->errstr
                                            : "out of memory");

        redisFree(s->c);
        s->c = NULL;
        return rc;
    }
    return SG_STORE_OK;
}

/* Ingest's connection: schema 2 set, or upgraded to (schema_lua, a batch
 * a call). */
static int
setup_schema(redis_store *s, char *err, int errlen)
{
    rcmd        c = { 0 };
    redisReply *r;
    long long   v = 1;
    int         rc = SG_STORE_OK;

    if (add_str(&c, "EVAL") || add_str(&c, schema_lua) || add_str(&c, "0")
        || rcmd_addf(&c, "%d", REDIS_MIGRATE_BATCH) < 0)
    {
        rcmd_free(&c);
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    }
    while (rc == SG_STORE_OK && v == 1) {
        r = command(s, &c, 60000, "schema", err, errlen, &rc);
        if (r == NULL)
            break;
        if (r->type != REDIS_REPLY_INTEGER)
            rc = sg_redis_reply_err(r, "schema", err, errlen);
        else
            v = r->integer;
        freeReplyObject(r);
    }
    rcmd_free(&c);
    if (rc == SG_STORE_OK && v != SG_STORE_SCHEMA)
        rc = sg_store_err(err, errlen, SG_STORE_EFAIL, "redis %s:%d: schema "
                          "%lld, this SparseGate writes schema %d", s->host,
                          s->port, v, SG_STORE_SCHEMA);
    return rc;
}

int
sg_redis_open(const char *hostport, int rw, sg_store **out, char *err,
    int errlen)
{
    redis_store *s = calloc(1, sizeof(*s));
    int          rc;

    *out = NULL;
    if (s == NULL)
        return sg_store_err(err, errlen, SG_STORE_ENOMEM, "out of memory");
    s->base.vt = &redis_vt;
    if (sg_parse_hostport(hostport, s->host, sizeof(s->host), &s->port) < 0)
    {
        free(s);
        return sg_store_err(err, errlen, SG_STORE_EINVAL,
                            "redis store '%s': expected HOST:PORT", hostport);
    }
    rc = sync_connect(s, err, errlen);
    if (rc == SG_STORE_OK && rw)
        rc = setup_schema(s, err, errlen);
    if (rc != SG_STORE_OK) {
        redis_close(&s->base);
        return rc;
    }
    *out = &s->base;
    return SG_STORE_OK;
}
