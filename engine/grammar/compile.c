/*
 * JSON Schemas and tool lists into the automaton's nodes and literal sets.
 *
 * Node 0 is any JSON value, node 1 any value but a string (DSML's
 * string="false" of a parameter that takes anything).  A keyword this
 * compiler cannot enforce is refused, with its path: a schema is never
 * half obeyed.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "grammar_internal.h"
#include "util/err.h"

#define DSML        "｜DSML｜"
#define PSTART      "<" DSML "parameter name=\""
#define PEND        "</" DSML "parameter>\n"
#define INVOKE_END  "</" DSML "invoke>\n"
#define CALLS_END   "</" DSML "function_calls>"

#define MAX_SCHEMA_DEPTH  24

/* every allocation of a grammar's parts, freed together */
typedef struct galloc {
    struct galloc *next;
} galloc;

static void *
g_alloc(sg_grammar *g, size_t n)
{
    galloc *a = calloc(1, sizeof(galloc) + n + 8);

    if (a == NULL)
        return NULL;
    a->next = g->parts;
    g->parts = a;
    return a + 1;
}

void
g_free_parts(sg_grammar *g)
{
    galloc *a = g->parts, *next;

    for (; a; a = next) {
        next = a->next;
        free(a);
    }
    g->parts = NULL;
    free(g->nodes);
    free(g->sets);
    free(g->funcs);
    g->nodes = NULL;
    g->sets = NULL;
    g->funcs = NULL;
}

void
g_kmp(const char *p, int n, int *fail)
{
    int k = 0;

    if (n > 0)
        fail[0] = 0;
    for (int i = 1; i < n; i++) {
        while (k > 0 && p[i] != p[k])
            k = fail[k - 1];
        if (p[i] == p[k])
            k++;
        fail[i] = k;
    }
}

/* ------------------------------------------------------- literal sets */

typedef struct lit {
    const char *s;
    uint16_t    len;
    int         payload;    /* the caller's: a node, a schema item */
} lit;

static int
by_lit(const void *a, const void *b)
{
    const lit *x = a, *y = b;
    size_t     n = x->len < y->len ? x->len : y->len;
    int        c = memcmp(x->s, y->s, n);

    return c != 0 ? c : (x->len > y->len) - (x->len < y->len);
}

/* Sorts the literals; refuses duplicates (dup 0) or drops them (1). */
static int
sort_lits(lit *l, int *n, int drop_dups)
{
    int k = 0;

    qsort(l, *n, sizeof(lit), by_lit);
    for (int i = 0; i < *n; i++) {
        if (k > 0 && by_lit(&l[k - 1], &l[i]) == 0) {
            if (!drop_dups)
                return -1;
            continue;
        }
        l[k++] = l[i];
    }
    *n = k;
    return 0;
}

/* The fewest tokens spelling s from each offset on (n + 1 entries, the
 * last 0): from the end backwards, each offset takes the best of the
 * tokens that begin there.  Beyond 256 bytes a literal costs its bytes
 * (an upper bound, which the budget rule allows). */
uint16_t *
g_cover(sg_grammar *g, const char *s, int n)
{
    uint16_t *c = g_alloc(g, sizeof(uint16_t) * (n + 1));
    int       lens[128];

    if (c == NULL)
        return NULL;
    c[n] = 0;
    for (int off = n - 1; off >= 0; off--) {
        int best = 1 + c[off + 1], k;

        if (n <= 256) {
            k = g_vocab_prefixes(g->v, s + off, n - off < 128 ? n - off : 128,
                                 lens);
            while (k-- > 0) {
                if (1 + c[off + lens[k]] < best)
                    best = 1 + c[off + lens[k]];
            }
        }
        c[off] = (uint16_t)best;
    }
    return c;
}

int
g_add_set(sg_grammar *g, int role, const char *const *s,
    const uint16_t *len, int n, char *err, int errlen)
{
    glits *set;

    if (g->n_sets == g->cap_sets) {
        int    cap = g->cap_sets ? 2 * g->cap_sets : 16;
        glits *p = realloc(g->sets, sizeof(glits) * cap);
        if (p == NULL)
            return sg_err(err, errlen, "out of memory");
        g->sets = p;
        g->cap_sets = cap;
    }
    set = &g->sets[g->n_sets];
    memset(set, 0, sizeof(*set));
    set->role = role;
    set->n = n;
    set->s = g_alloc(g, sizeof(char *) * (n + 1));
    set->len = g_alloc(g, sizeof(uint16_t) * (n + 1));
    if (set->s == NULL || set->len == NULL)
        return sg_err(err, errlen, "out of memory");
    set->cover = g_alloc(g, sizeof(uint16_t *) * (n + 1));
    if (set->cover == NULL)
        return sg_err(err, errlen, "out of memory");
    set->min_cost = n > 0 ? UINT16_MAX : 0;
    for (int i = 0; i < n; i++) {
        char *c = g_alloc(g, len[i] + 1);
        if (c == NULL)
            return sg_err(err, errlen, "out of memory");
        memcpy(c, s[i], len[i]);
        set->s[i] = c;
        set->len[i] = len[i];
        set->cover[i] = g_cover(g, c, len[i]);
        if (set->cover[i] == NULL)
            return sg_err(err, errlen, "out of memory");
        if (set->cover[i][0] < set->min_cost)
            set->min_cost = set->cover[i][0];
    }
    return g->n_sets++;
}

static int
add_lits(sg_grammar *g, int role, const lit *l, int n, char *err,
    int errlen)
{
    const char **s = malloc(sizeof(char *) * (n + 1));
    uint16_t    *len = malloc(sizeof(uint16_t) * (n + 1));
    int          rc;

    if (s == NULL || len == NULL) {
        free(s);
        free(len);
        return sg_err(err, errlen, "out of memory");
    }
    for (int i = 0; i < n; i++) {
        s[i] = l[i].s;
        len[i] = l[i].len;
    }
    rc = g_add_set(g, role, s, len, n, err, errlen);
    free(s);
    free(len);
    return rc;
}

static int
add_fixed(sg_grammar *g, int role, const char *const *s, int n, char *err,
    int errlen)
{
    lit l[4];

    for (int i = 0; i < n; i++) {
        l[i].s = s[i];
        l[i].len = (uint16_t)strlen(s[i]);
        l[i].payload = i;
    }
    sort_lits(l, &n, 0);
    return add_lits(g, role, l, n, err, errlen);
}

/* ------------------------------------------------------------ nodes */

static int
new_node(sg_grammar *g)
{
    gnode *n;

    if (g->n_nodes == G_MAX_NODES)
        return -1;
    if (g->n_nodes == g->cap_nodes) {
        int    cap = g->cap_nodes ? 2 * g->cap_nodes : 16;
        gnode *p = realloc(g->nodes, sizeof(gnode) * cap);
        if (p == NULL)
            return -1;
        g->nodes = p;
        g->cap_nodes = cap;
    }
    n = &g->nodes[g->n_nodes];
    memset(n, 0, sizeof(*n));
    n->lits = -1;
    n->raw_lits = -1;
    n->nonstr = -1;
    n->keys = -1;
    n->max_items = -1;
    return g->n_nodes++;
}

static uint32_t
sat_add(uint32_t a, uint32_t b)
{
    uint64_t s = (uint64_t)a + b;

    return s > UINT32_MAX / 8 ? UINT32_MAX / 8 : (uint32_t)s;
}

/* The shortest value of a node without an enum. */
static uint32_t
min_of_types(const sg_grammar *g, const gnode *n)
{
    uint32_t best = UINT32_MAX / 8, c;

    if (n->types & (T_INT | T_NUM))
        best = 1;
    if ((n->types & T_STR) && 2 < best)
        best = 2;
    if ((n->types & T_NULL) && g->sets[g->s_null].min_cost < best)
        best = g->sets[g->s_null].min_cost;
    if ((n->types & T_BOOL) && g->sets[g->s_bool].min_cost < best)
        best = g->sets[g->s_bool].min_cost;
    if (n->types & T_ARR) {
        c = 2;
        if (n->min_items > 0)
            c = sat_add(c, (uint32_t)n->min_items
                           * (g->nodes[n->item].minlen + 1) - 1);
        if (c < best)
            best = c;
    }
    if (n->types & T_OBJ) {
        c = sat_add(2, n->req_cost + (n->req_n > 0 ? n->req_n - 1 : 0));
        if (c < best)
            best = c;
    }
    return best;
}

/* The two basic nodes: any value (0) and any but a string (1). */
static int
basic_nodes(sg_grammar *g)
{
    int a = new_node(g), b = new_node(g);

    if (a != 0 || b != 1)
        return -1;
    g->nodes[0].types = T_ANY;
    g->nodes[0].nonstr = 1;
    g->nodes[0].minlen = 1;
    g->nodes[1].types = T_ANY & ~T_STR;
    g->nodes[1].nonstr = 1;
    g->nodes[1].raw_lits = -2;
    g->nodes[1].minlen = 1;
    return 0;
}

typedef struct ctx {
    sg_grammar *g;
    char       *err;
    int         errlen;
    char        path[256];
} ctx;

static int
fail(ctx *c, const char *fmt, const char *what)
{
    if (c->path[0])
        sg_err(c->err, c->errlen, "%s: %s%s", c->path, fmt, what ? what : "");
    else
        sg_err(c->err, c->errlen, "%s%s", fmt, what ? what : "");
    return -1;
}

static int compile_schema(ctx *c, const cJSON *s, int depth);

static int
type_bits(ctx *c, const cJSON *t, uint8_t *bits)
{
    static const struct { const char *name; uint8_t bit; } names[] = {
        { "null", T_NULL }, { "boolean", T_BOOL }, { "integer", T_INT },
        { "number", T_NUM | T_INT }, { "string", T_STR },
        { "array", T_ARR }, { "object", T_OBJ }
    };
    const cJSON *one;

    *bits = 0;
    if (cJSON_IsString(t) || cJSON_IsArray(t)) {
        if (cJSON_IsArray(t)) {
            cJSON_ArrayForEach(one, t) {
                if (!cJSON_IsString(one))
                    return fail(c, "\"type\" must be a string or a list "
                                "of strings", NULL);
            }
        }
        for (const cJSON *x = cJSON_IsString(t) ? t : t->child; x;
             x = cJSON_IsString(t) ? NULL : x->next)
        {
            size_t k;
            for (k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
                if (strcmp(x->valuestring, names[k].name) == 0)
                    break;
            }
            if (k == sizeof(names) / sizeof(names[0]))
                return fail(c, "unknown type ", x->valuestring);
            *bits |= names[k].bit;
        }
        if (*bits == 0)
            return fail(c, "\"type\" lists no type", NULL);
        return 0;
    }
    return fail(c, "\"type\" must be a string or a list of strings", NULL);
}

static int
lit_type(const cJSON *v)
{
    if (cJSON_IsNull(v))
        return T_NULL;
    if (cJSON_IsBool(v))
        return T_BOOL;
    if (cJSON_IsNumber(v))
        return v->valuedouble == (double)(long long)v->valuedouble
               ? T_INT | T_NUM : T_NUM;
    if (cJSON_IsString(v))
        return T_STR;
    return cJSON_IsArray(v) ? T_ARR : T_OBJ;
}

/* enum / const: the values as compact JSON literals (those of the node's
 * types), their strings also as raw text for DSML. */
static int
compile_enum(ctx *c, int id, const cJSON *values, int is_const)
{
    sg_grammar  *g = c->g;
    const cJSON *v;
    int          n = 0, n_raw = 0, n_ns = 0, cap, rc = -1;
    lit         *l, *raw, *ns;
    char       **texts;

    cap = is_const ? 1 : cJSON_GetArraySize(values);
    if (!is_const && (!cJSON_IsArray(values) || cap == 0 || cap > 1024))
        return fail(c, "\"enum\" must be an array of 1 to 1024 values",
                    NULL);
    l = calloc(cap + 1, sizeof(lit));
    raw = calloc(cap + 1, sizeof(lit));
    ns = calloc(cap + 1, sizeof(lit));
    texts = calloc(cap + 1, sizeof(char *));
    if (!l || !raw || !ns || !texts) {
        fail(c, "out of memory", NULL);
        goto out;
    }
    for (v = is_const ? values : values->child; v;
         v = is_const ? NULL : v->next)
    {
        char *t;
        if (!(lit_type(v) & g->nodes[id].types))
            continue;                    /* not of the node's types */
        t = cJSON_PrintUnformatted(v);
        if (t == NULL || strlen(t) > 4096) {
            free(t);
            fail(c, "an enum value is too long", NULL);
            goto out;
        }
        texts[n] = t;
        l[n].s = t;
        l[n].len = (uint16_t)strlen(t);
        if (cJSON_IsString(v)) {
            raw[n_raw].s = v->valuestring;
            raw[n_raw].len = (uint16_t)strlen(v->valuestring);
            n_raw++;
        } else {
            ns[n_ns++] = l[n];
        }
        n++;
    }
    if (n == 0) {
        fail(c, "no value of \"enum\" or \"const\" is of the schema's type",
             NULL);
        goto out;
    }
    sort_lits(l, &n, 1);
    sort_lits(raw, &n_raw, 1);
    sort_lits(ns, &n_ns, 1);
    if ((g->nodes[id].lits = add_lits(g, R_VALUE, l, n, c->err, c->errlen))
        < 0)
        goto out;
    g->nodes[id].raw_lits = -2;
    if (n_raw > 0) {
        /* a raw value may not hold the DSML marker */
        int k = 0;
        for (int i = 0; i < n_raw; i++) {
            if (strstr(raw[i].s, DSML) == NULL && raw[i].len > 0)
                raw[k++] = raw[i];
        }
        n_raw = k;
        if (n_raw > 0
            && (g->nodes[id].raw_lits = add_lits(g, R_RAWVALUE, raw, n_raw,
                                                 c->err, c->errlen)) < 0)
            goto out;
    }
    g->nodes[id].minlen = g->sets[g->nodes[id].lits].min_cost;
    if (n_ns == n) {
        g->nodes[id].nonstr = id;
    } else if (n_ns > 0) {
        int k = new_node(g);
        if (k < 0) {
            fail(c, "too many schema nodes", NULL);
            goto out;
        }
        g->nodes[k] = g->nodes[id];
        g->nodes[k].types &= ~T_STR;
        g->nodes[k].raw_lits = -2;
        g->nodes[k].nonstr = k;
        if ((g->nodes[k].lits = add_lits(g, R_VALUE, ns, n_ns, c->err,
                                         c->errlen)) < 0)
            goto out;
        g->nodes[k].minlen = g->sets[g->nodes[k].lits].min_cost;
        g->nodes[id].nonstr = k;
    }
    rc = 0;
out:
    for (int i = 0; texts && i < cap; i++)
        free(texts[i]);
    free(texts);
    free(l);
    free(raw);
    free(ns);
    return rc;
}

static int
plain_name(const char *s)
{
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p < 0x20 || *p == '"' || *p == '\\')
            return 0;
    }
    return strstr(s, DSML) == NULL;
}

static int
compile_object(ctx *c, int id, const cJSON *s, int depth)
{
    sg_grammar  *g = c->g;
    const cJSON *props = cJSON_GetObjectItemCaseSensitive(s, "properties");
    const cJSON *req = cJSON_GetObjectItemCaseSensitive(s, "required");
    const cJSON *addl = cJSON_GetObjectItemCaseSensitive(s,
                                                        "additionalProperties");
    const cJSON *p;
    size_t       plen = strlen(c->path);
    lit         *l;
    char       **names;
    int          n = 0, rc = -1, child;
    gnode       *node;

    if (req != NULL && !cJSON_IsArray(req))
        return fail(c, "\"required\" must be an array", NULL);
    if (props == NULL) {
        if (req != NULL && cJSON_GetArraySize(req) > 0)
            return fail(c, "\"required\" without \"properties\"", NULL);
        if (cJSON_IsFalse(addl)) {
            g->nodes[id].keys = g_add_set(g, R_KEY, NULL, NULL, 0, c->err,
                                          c->errlen);
            return g->nodes[id].keys < 0 ? -1 : 0;
        }
        g->nodes[id].keys = -1;
        g->nodes[id].extra = 0;
        if (cJSON_IsObject(addl)) {
            snprintf(c->path + plen, sizeof(c->path) - plen,
                     ".additionalProperties");
            child = compile_schema(c, addl, depth + 1);
            c->path[plen] = '\0';
            if (child < 0)
                return -1;
            g->nodes[id].extra = child;
        }
        return 0;
    }
    if (!cJSON_IsObject(props))
        return fail(c, "\"properties\" must be an object", NULL);
    n = cJSON_GetArraySize(props);
    if (n > G_MAX_PROPS)
        return fail(c, "more than 64 properties", NULL);
    l = calloc(n + 1, sizeof(lit));
    names = calloc(n + 1, sizeof(char *));
    if (l == NULL || names == NULL) {
        free(l);
        free(names);
        return fail(c, "out of memory", NULL);
    }
    n = 0;
    cJSON_ArrayForEach(p, props) {
        size_t k = strlen(p->string);
        if (!plain_name(p->string)) {
            fail(c, "a property name with a quote, a backslash or a "
                 "control character: ", p->string);
            goto out;
        }
        names[n] = malloc(k + 3);
        if (names[n] == NULL) {
            fail(c, "out of memory", NULL);
            goto out;
        }
        names[n][0] = '"';
        memcpy(names[n] + 1, p->string, k);
        names[n][k + 1] = '"';
        l[n].s = names[n];
        l[n].len = (uint16_t)(k + 2);
        snprintf(c->path + plen, sizeof(c->path) - plen, ".properties.%s",
                 p->string);
        child = compile_schema(c, p, depth + 1);
        c->path[plen] = '\0';
        if (child < 0) {
            n++;
            goto out;
        }
        l[n].payload = child;
        n++;
    }
    if (sort_lits(l, &n, 0) != 0) {
        fail(c, "a property named twice", NULL);
        goto out;
    }
    {
        int set = add_lits(g, R_KEY, l, n, c->err, c->errlen);
        if (set < 0)
            goto out;
        node = &g->nodes[id];
        node->keys = set;
        node->n_props = n;
        node->prop_node = g_alloc(g, sizeof(int) * (n + 1));
        node->prop_cost = g_alloc(g, sizeof(uint32_t) * (n + 1));
        if (node->prop_node == NULL || node->prop_cost == NULL) {
            fail(c, "out of memory", NULL);
            goto out;
        }
        for (int i = 0; i < n; i++) {
            node->prop_node[i] = l[i].payload;
            node->prop_cost[i] = sat_add(g->sets[set].cover[i][0] + 1,
                                         g->nodes[l[i].payload].minlen);
        }
    }
    cJSON_ArrayForEach(p, req) {
        int found = -1;
        if (!cJSON_IsString(p)) {
            fail(c, "\"required\" must list names", NULL);
            goto out;
        }
        for (int i = 0; i < n; i++) {
            if (l[i].len == strlen(p->valuestring) + 2
                && memcmp(l[i].s + 1, p->valuestring, l[i].len - 2) == 0)
                found = i;
        }
        if (found < 0) {
            fail(c, "\"required\" names a property not in \"properties\": ",
                 p->valuestring);
            goto out;
        }
        node = &g->nodes[id];
        if (!(node->required >> found & 1)) {
            node->required |= (uint64_t)1 << found;
            node->req_cost = sat_add(node->req_cost, node->prop_cost[found]);
            node->req_n++;
        }
    }
    rc = 0;
out:
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(l);
    return rc;
}

static int
count_bound(ctx *c, const cJSON *v, const char *name, int *out)
{
    if (v == NULL)
        return 0;
    if (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1e6
        || v->valuedouble != (double)(int)v->valuedouble)
        return fail(c, "must be a non-negative integer: ", name);
    *out = (int)v->valuedouble;
    return 0;
}

static int
compile_schema(ctx *c, const cJSON *s, int depth)
{
    static const char *const known[] = {
        "type", "properties", "required", "additionalProperties", "items",
        "minItems", "maxItems", "enum", "const", "title", "description",
        "default", "examples", "$schema", "$id", "$comment", NULL
    };
    sg_grammar  *g = c->g;
    const cJSON *k, *t;
    size_t       plen = strlen(c->path);
    int          id;
    gnode       *n;

    if (depth > MAX_SCHEMA_DEPTH)
        return fail(c, "nested too deep", NULL);
    if (cJSON_IsTrue(s))
        return 0;
    if (!cJSON_IsObject(s))
        return fail(c, "a schema must be an object", NULL);
    cJSON_ArrayForEach(k, s) {
        int i;
        for (i = 0; known[i] && strcmp(known[i], k->string) != 0; i++) {
        }
        if (known[i] == NULL)
            return fail(c, "this keyword is not supported: ", k->string);
    }
    id = new_node(g);
    if (id < 0)
        return fail(c, "too many schema nodes", NULL);
    g->nodes[id].types = T_ANY;
    if ((t = cJSON_GetObjectItemCaseSensitive(s, "type")) != NULL) {
        uint8_t bits;
        if (type_bits(c, t, &bits) != 0)
            return -1;
        g->nodes[id].types = bits;
    }
    if ((t = cJSON_GetObjectItemCaseSensitive(s, "enum")) != NULL
        || (t = cJSON_GetObjectItemCaseSensitive(s, "const")) != NULL)
    {
        if (cJSON_GetObjectItemCaseSensitive(s, "enum")
            && cJSON_GetObjectItemCaseSensitive(s, "const"))
            return fail(c, "both \"enum\" and \"const\"", NULL);
        return compile_enum(c, id, t, t->string[0] == 'c') == 0 ? id : -1;
    }

    if (g->nodes[id].types & T_OBJ) {
        if (compile_object(c, id, s, depth) != 0)
            return -1;
    }
    if (g->nodes[id].types & T_ARR) {
        const cJSON *items = cJSON_GetObjectItemCaseSensitive(s, "items");
        int          item = 0, lo = 0, hi = -1;

        if (items != NULL) {
            if (!cJSON_IsObject(items) && !cJSON_IsTrue(items))
                return fail(c, "\"items\" must be a schema", NULL);
            snprintf(c->path + plen, sizeof(c->path) - plen, ".items");
            item = compile_schema(c, items, depth + 1);
            c->path[plen] = '\0';
            if (item < 0)
                return -1;
        }
        if (count_bound(c, cJSON_GetObjectItemCaseSensitive(s, "minItems"),
                        "minItems", &lo) != 0
            || count_bound(c, cJSON_GetObjectItemCaseSensitive(s,
                                                               "maxItems"),
                           "maxItems", &hi) != 0)
            return -1;
        if (hi >= 0 && hi < lo)
            return fail(c, "maxItems below minItems", NULL);
        n = &g->nodes[id];
        n->item = item;
        n->min_items = lo;
        n->max_items = hi;
    }
    n = &g->nodes[id];
    n->minlen = min_of_types(g, n);
    /* DSML: a string is raw text; the rest is JSON without strings */
    n->raw_lits = (n->types & T_STR) ? -1 : -2;
    if (!(n->types & T_STR)) {
        n->nonstr = id;
    } else if (n->types & ~T_STR) {
        int k = new_node(g);
        if (k < 0)
            return fail(c, "too many schema nodes", NULL);
        n = &g->nodes[id];
        g->nodes[k] = *n;
        g->nodes[k].types &= ~T_STR;
        g->nodes[k].raw_lits = -2;
        g->nodes[k].nonstr = k;
        g->nodes[k].minlen = min_of_types(g, &g->nodes[k]);
        g->nodes[id].nonstr = k;
    }
    return id;
}

static int
basic_sets(sg_grammar *g, char *err, int errlen)
{
    static const char *const bools[] = { "false", "true" };
    static const char *const null[] = { "null" };

    if (basic_nodes(g) != 0)
        return sg_err(err, errlen, "out of memory");
    g->s_bool = add_fixed(g, R_VALUE, bools, 2, err, errlen);
    g->s_null = add_fixed(g, R_VALUE, null, 1, err, errlen);
    return g->s_bool < 0 || g->s_null < 0 ? -1 : 0;
}

sg_grammar *
sg_grammar_json(const sg_vocab *v, const char *schema, size_t len,
    const sg_grammar_opts *o, char *err, int errlen)
{
    sg_grammar *g = g_new(v, G_JSON, o, err, errlen);
    cJSON      *s;
    ctx         c;

    if (g == NULL)
        return NULL;
    if (basic_sets(g, err, errlen) != 0)
        goto fail;
    if (schema == NULL) {
        /* any object: an object node of any keys and values */
        int id = new_node(g);
        if (id < 0)
            goto fail;
        g->nodes[id].types = T_OBJ;
        g->nodes[id].keys = -1;
        g->nodes[id].extra = 0;
        g->nodes[id].minlen = 2;
        g->nodes[id].raw_lits = -2;
        g->nodes[id].nonstr = id;
        g->root = id;
    } else {
        s = cJSON_ParseWithLength(schema, len);
        if (s == NULL) {
            sg_err(err, errlen, "the schema is not JSON");
            goto fail;
        }
        memset(&c, 0, sizeof(c));
        c.g = g;
        c.err = err;
        c.errlen = errlen;
        g->root = compile_schema(&c, s, 0);
        cJSON_Delete(s);
        if (g->root < 0)
            goto fail;
    }
    {
        gstate st;
        g_state_init(g, &st);
        g->min_bytes = g_need(g, &st);
    }
    return g;
fail:
    sg_grammar_unref(g);
    return NULL;
}

/* ---------------------------------------------------------- tool calls */

/* One function's parameters: a literal set of "name\" string=\"" with a
 * node each, or any names and values (-1). */
static int
compile_params(ctx *c, gfunc *fn, const cJSON *params)
{
    sg_grammar  *g = c->g;
    int          id;
    gnode       *n;
    lit         *l;
    char       **names;
    int          rc = -1, np;

    fn->params = -1;
    if (params == NULL || cJSON_IsNull(params))
        return 0;
    id = compile_schema(c, params, 0);
    if (id < 0)
        return -1;
    n = &g->nodes[id];
    if (n->lits >= 0 || !(n->types & T_OBJ))
        return fail(c, "the parameters must be an object schema", NULL);
    if (n->keys < 0)
        return 0;                        /* any parameters */
    np = n->n_props;
    l = calloc(np + 1, sizeof(lit));
    names = calloc(np + 1, sizeof(char *));
    if (l == NULL || names == NULL) {
        free(l);
        free(names);
        return fail(c, "out of memory", NULL);
    }
    /* "\"name\"" into "name\" string=\"": the order stays the same, as
     * the closing quote sorts below every name byte but '!'... so sort
     * again */
    for (int i = 0; i < np; i++) {
        const char *k = g->sets[n->keys].s[i] + 1;
        int         kl = g->sets[n->keys].len[i] - 2;
        names[i] = malloc(kl + 11);
        if (names[i] == NULL)
            goto out;
        memcpy(names[i], k, kl);
        memcpy(names[i] + kl, "\" string=\"", 10);
        l[i].s = names[i];
        l[i].len = (uint16_t)(kl + 10);
        l[i].payload = i;
    }
    sort_lits(l, &np, 0);
    fn->params = add_lits(g, R_PKEY, l, np, c->err, c->errlen);
    if (fn->params < 0)
        goto out;
    fn->n_params = np;
    fn->param_node = g_alloc(g, sizeof(int) * (np + 1));
    fn->param_cost = g_alloc(g, sizeof(uint32_t) * (np + 1));
    if (fn->param_node == NULL || fn->param_cost == NULL)
        goto out;
    for (int i = 0; i < np; i++) {
        int          src = l[i].payload;
        const gnode *pn = &g->nodes[n->prop_node[src]];
        uint32_t     t = UINT32_MAX / 8, f = UINT32_MAX / 8;

        fn->param_node[i] = n->prop_node[src];
        if (pn->raw_lits != -2)
            t = g->c_true + (pn->raw_lits >= 0
                             ? g->sets[pn->raw_lits].min_cost : 0);
        if (pn->nonstr >= 0)
            f = g->c_false + g->nodes[pn->nonstr].minlen;
        if (t >= UINT32_MAX / 8 && f >= UINT32_MAX / 8) {
            fail(c, "a parameter that no value can satisfy", NULL);
            goto out;
        }
        fn->param_cost[i] = sat_add(g->c_pstart
                                    + g->sets[fn->params].cover[i][0]
                                    + g->c_pend, t < f ? t : f);
        if (n->required >> src & 1) {
            fn->required |= (uint64_t)1 << i;
            fn->req_cost = sat_add(fn->req_cost, fn->param_cost[i]);
            fn->req_n++;
        }
    }
    rc = 0;
out:
    if (rc != 0 && c->err[0] == '\0')
        fail(c, "out of memory", NULL);
    for (int i = 0; i < n->n_props; i++)
        free(names[i]);
    free(names);
    free(l);
    return rc;
}

sg_grammar *
sg_grammar_tool_calls(const sg_vocab *v, const char *tools, size_t len,
    const char *only, int parallel, const sg_grammar_opts *o, char *err,
    int errlen)
{
    static const char *const open[] = { "\n\n<" DSML "function_calls>\n" };
    static const char *const invoke[] = { "<" DSML "invoke name=\"" };
    static const char *const next[] = { CALLS_END, "<" DSML "invoke name=\"" };
    static const char *const param[] = { "\n" INVOKE_END, INVOKE_END,
                                         PSTART };
    static const char *const type[] = { "false\">", "true\">" };
    static const char *const pend[] = { PEND };
    static const char *const keyrest[] = { " string=\"" };
    sg_grammar  *g = g_new(v, G_DSML, o, err, errlen);
    cJSON       *arr = NULL, *t;
    lit         *l = NULL;
    char       **names = NULL;
    int          n = 0, cap = 0;
    ctx          c;
    uint32_t     best = UINT32_MAX / 8;

    if (g == NULL)
        return NULL;
    memset(&c, 0, sizeof(c));
    c.g = g;
    c.err = err;
    c.errlen = errlen;
    if (err && errlen > 0)
        err[0] = '\0';
    g->parallel = parallel;
    if (basic_sets(g, err, errlen) != 0)
        goto fail;
    if ((g->s_open = add_fixed(g, R_OPEN, open, 1, err, errlen)) < 0
        || (g->s_invoke = add_fixed(g, R_INVOKE, invoke, 1, err, errlen)) < 0
        || (g->s_next = add_fixed(g, R_NEXT, next, 2, err, errlen)) < 0
        || (g->s_param = add_fixed(g, R_PARAM, param, 3, err, errlen)) < 0
        || (g->s_type = add_fixed(g, R_PTYPE, type, 2, err, errlen)) < 0
        || (g->s_pend = add_fixed(g, R_PEND, pend, 1, err, errlen)) < 0
        || (g->s_keyrest = add_fixed(g, R_PKEYREST, keyrest, 1, err,
                                     errlen)) < 0)
        goto fail;
    g->c_invoke_end = g_cover(g, INVOKE_END, sizeof(INVOKE_END) - 1)[0];
    g->c_calls_end = g_cover(g, CALLS_END, sizeof(CALLS_END) - 1)[0];
    g->c_pstart = g_cover(g, PSTART, sizeof(PSTART) - 1)[0];
    g->c_pend = g->sets[g->s_pend].min_cost;
    g->c_true = g_cover(g, "true\">", 6)[0];
    g->c_false = g_cover(g, "false\">", 7)[0];
    g->c_keyrest = g->sets[g->s_keyrest].min_cost;

    arr = cJSON_ParseWithLength(tools, len);
    if (!cJSON_IsArray(arr) || cJSON_GetArraySize(arr) == 0) {
        sg_err(err, errlen, "tools: not a non-empty array");
        goto fail;
    }
    cap = cJSON_GetArraySize(arr);
    if (cap > G_MAX_FUNCS) {
        sg_err(err, errlen, "tools: more than %d", G_MAX_FUNCS);
        goto fail;
    }
    l = calloc(cap + 1, sizeof(lit));
    names = calloc(cap + 1, sizeof(char *));
    g->funcs = calloc(cap + 1, sizeof(gfunc));
    if (l == NULL || names == NULL || g->funcs == NULL) {
        sg_err(err, errlen, "out of memory");
        goto fail;
    }
    cJSON_ArrayForEach(t, arr) {
        const cJSON *fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        size_t       k;

        snprintf(c.path, sizeof(c.path), "tools[%d].function", n);
        if (!cJSON_IsString(name) || name->valuestring[0] == '\0'
            || !plain_name(name->valuestring)) {
            fail(&c, "a name without quotes, backslashes or control "
                 "characters", NULL);
            goto fail;
        }
        if (only != NULL && strcmp(only, name->valuestring) != 0)
            continue;
        snprintf(c.path, sizeof(c.path), "tools[%d].function.parameters",
                 n);
        /* compiled in the list's order, sorted below */
        if (compile_params(&c, &g->funcs[n], cJSON_GetObjectItemCaseSensitive(
                               fn, "parameters")) != 0)
            goto fail;
        k = strlen(name->valuestring);
        names[n] = malloc(k + 4);
        if (names[n] == NULL) {
            sg_err(err, errlen, "out of memory");
            goto fail;
        }
        memcpy(names[n], name->valuestring, k);
        memcpy(names[n] + k, "\">\n", 4);
        l[n].s = names[n];
        l[n].len = (uint16_t)(k + 3);
        l[n].payload = n;
        n++;
    }
    if (n == 0) {
        sg_err(err, errlen, "tool_choice: no function \"%s\" in tools",
               only ? only : "");
        goto fail;
    }
    if (sort_lits(l, &n, 0) != 0) {
        sg_err(err, errlen, "tools: a function named twice");
        goto fail;
    }
    if ((g->s_names = add_lits(g, R_NAME, l, n, err, errlen)) < 0)
        goto fail;
    {
        gfunc *sorted = calloc(n + 1, sizeof(gfunc));
        if (sorted == NULL) {
            sg_err(err, errlen, "out of memory");
            goto fail;
        }
        for (int i = 0; i < n; i++) {
            sorted[i] = g->funcs[l[i].payload];
            sorted[i].min_body = sat_add(sorted[i].req_cost,
                                         g->c_invoke_end);
            if (sat_add(g->sets[g->s_names].cover[i][0], sorted[i].min_body)
                < best)
                best = sat_add(g->sets[g->s_names].cover[i][0],
                               sorted[i].min_body);
        }
        free(g->funcs);
        g->funcs = sorted;
        g->n_funcs = n;
    }
    g->first_cost = sat_add(g->sets[g->s_invoke].min_cost
                            + g->c_calls_end, best);
    {
        gstate st;
        g_state_init(g, &st);
        g->min_bytes = g_need(g, &st);
    }
    for (int i = 0; i < cap; i++)
        free(names[i]);
    free(names);
    free(l);
    cJSON_Delete(arr);
    return g;
fail:
    for (int i = 0; names && i < cap; i++)
        free(names[i]);
    free(names);
    free(l);
    cJSON_Delete(arr);
    sg_grammar_unref(g);
    return NULL;
}
