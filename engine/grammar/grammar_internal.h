/*
 * Internals of constrained decoding (grammar.h), shared by the files here:
 *
 *   vocab.c     sg_vocab: the tokens' bytes, sorted, with their common
 *               prefixes (the walk visits them as a trie)
 *   compile.c   JSON Schema and tool lists into nodes and literal sets
 *   machine.c   the byte-level pushdown automaton: g_step, g_need
 *   mask.c      the token masks (a walk of the vocabulary per state,
 *               cached), the budget rule, states, references
 *
 * The automaton reads the output byte by byte.  Its state is a lexer (what
 * the bytes of the current token of the language are: a string, a number,
 * one of a set of literals, DSML raw text, the free text before the gate)
 * over a stack of frames (the containers open: the root, objects, arrays,
 * the DSML block and its invokes).  g_need gives the fewest bytes that
 * complete the output from a state, exactly: the budget rule rests on it.
 */
#ifndef SG_GRAMMAR_INTERNAL_H
#define SG_GRAMMAR_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>

#include "grammar.h"

#define G_MAX_DEPTH    32       /* frames: nesting of the output */
#define G_MAX_PROPS    64       /* properties of one object, parameters of
                                   one function (a bit each) */
#define G_MAX_FUNCS    128
#define G_MAX_NODES    4096
#define G_CACHE_BYTES  ((size_t)32 << 20)  /* the mask tables kept */
#define G_SPARSE_MAX   4096     /* a state allowing at most this many
                                   tokens keeps a list, not a table */

/* JSON types, as bits */
enum {
    T_NULL = 1, T_BOOL = 2, T_INT = 4, T_NUM = 8, T_STR = 16, T_ARR = 32,
    T_OBJ = 64, T_ANY = 127
};

/* What completing a literal of a set means (machine.c: lit_complete). */
enum {
    R_VALUE = 1,    /* a JSON value (enum, const, true, false, null) */
    R_RAWVALUE,     /* a DSML raw value of an enum of strings */
    R_KEY,          /* an object's property name, quotes included */
    R_OPEN,         /* "\n\n<｜DSML｜function_calls>\n" */
    R_INVOKE,       /* "<｜DSML｜invoke name=\"" (the first) */
    R_NEXT,         /* the block's end, or another invoke */
    R_NAME,         /* a function's name + "\">\n" */
    R_PARAM,        /* the invoke's end (two forms), or a parameter */
    R_PKEY,         /* a parameter's name + "\" string=\"" */
    R_PKEYREST,     /* " string=\"" after a free parameter name */
    R_PTYPE,        /* "false\">" or "true\">" */
    R_PEND          /* "</｜DSML｜parameter>\n" */
};

/* A sorted set of byte strings.  Costs are in tokens: cover[i][off] is
 * the fewest tokens of the vocabulary that spell literal i from off on
 * (every byte is a token, so a byte never lowers it by more than one, and
 * the first token of a fewest cover lowers it by exactly one: the budget
 * rule needs no more). */
typedef struct glits {
    int        n;
    int        role;
    char     **s;
    uint16_t  *len;
    uint16_t **cover;
    uint16_t   min_cost;        /* the cheapest literal's cover[0] */
} glits;

/* A JSON Schema, compiled. */
typedef struct gnode {
    uint8_t    types;           /* T_* bits */
    int        lits;            /* enum/const: a literal set (JSON text), or
                                   -1 */
    int        raw_lits;        /* DSML: the enum's strings as raw text, or
                                   -1 (-2: no string allowed) */
    int        nonstr;          /* DSML: this node without strings (for
                                   string="false"), or -1 */
    /* objects */
    int        keys;            /* literal set of "\"name\"", or -1: any
                                   keys, values of node extra */
    int        extra;
    int        n_props;
    int       *prop_node;       /* by the keys' sorted index */
    uint32_t  *prop_cost;       /* "\"name\"" + ':' + minlen(value) */
    uint64_t   required;
    uint32_t   req_cost;
    int        req_n;
    /* arrays */
    int        item;
    int        min_items, max_items;    /* max -1: none */
    uint32_t   minlen;          /* the shortest value */
} gnode;

/* A DSML function. */
typedef struct gfunc {
    int        params;          /* literal set of "name\" string=\"", or -1:
                                   any names, any values */
    int        n_params;
    int       *param_node;      /* by sorted index */
    uint32_t  *param_cost;      /* one whole parameter, at its shortest */
    uint64_t   required;
    uint32_t   req_cost;
    int        req_n;
    uint32_t   min_body;        /* required parameters + the invoke's end */
} gfunc;

enum { G_JSON = 1, G_DSML };

/* the mask cache: one entry per state seen */
typedef struct gentry {
    uint8_t        *key;
    uint32_t        key_len;
    uint64_t        hash;
    int32_t         need;       /* g_need of the state */
    uint8_t        *delta;      /* a table, per token id: need after it -
                                   need + 128; 254: see big; 255: not
                                   allowed; or NULL: */
    int32_t        *list;       /* (id, need after - need) of the tokens
                                   allowed, when few are */
    int             n_list;
    int32_t        *big;        /* (id, exact delta) pairs, delta >= 126 */
    int             n_big;
    size_t          bytes;
    struct gentry  *lru_prev, *lru_next, *chain;
} gentry;

struct sg_grammar {
    atomic_int      refs;
    const sg_vocab *v;
    int             kind;
    gnode          *nodes;
    int             n_nodes, cap_nodes;
    glits          *sets;
    int             n_sets, cap_sets;
    int             root;       /* JSON: the root node */

    /* DSML */
    gfunc          *funcs;
    int             n_funcs;
    int             parallel;
    int             s_open, s_invoke, s_next, s_names, s_param, s_type,
                    s_pend, s_keyrest;
    uint32_t        first_cost; /* an invoke + the end, after the open */
    /* the costs of DSML's fixed strings, in tokens */
    uint32_t        c_invoke_end, c_calls_end, c_pstart, c_pend, c_true,
                    c_false, c_keyrest;

    /* both */
    int             s_bool, s_null;
    char           *gate;
    int             gate_len;
    int            *gate_fail;  /* KMP */
    uint16_t       *gate_cover; /* tokens to write the gate from k on */
    int             d_fail[16]; /* KMP of "｜DSML｜" in raw values */
    int             min_bytes;

    void           *parts;      /* compile.c's allocations, a list */
    /* the cache, under lock: a device group's ranks sample on their own
     * threads, and requests on several ranks may share a grammar */
    pthread_mutex_t lock;
    gentry        **table;      /* hash chains */
    int             table_mask;
    gentry         *lru_head, *lru_tail;   /* head: most recent */
    int             n_entries;
    size_t          cache_bytes;
    float          *saved;      /* scratch: a list's logits */
    uint64_t        n_masks, n_misses;
};

/* Lexer modes. */
enum { M_IDLE = 0, M_GATE, M_STR, M_NUM, M_LIT, M_RAW, M_FREEKEY };

/* Frame kinds and their positions. */
enum { F_ROOT = 1, F_OBJ, F_ARR, F_BLOCK, F_INVOKE };
enum { R_AT_VALUE = 0, R_AT_DONE };
enum { O_FIRST = 0, O_KEY, O_COLON, O_VALUE, O_AFTER, O_KEYSCAN };
enum { A_FIRST = 0, A_VALUE, A_AFTER };
enum { B_OPEN = 0, B_FIRST, B_NAME, B_NEXT, B_DONE };
enum { I_PARAMS = 0, I_PKEY, I_PTYPE, I_PVALUE, I_PEND, I_FKEY };

/* Laid out without padding: states are compared and hashed as bytes. */
typedef struct gframe {
    uint64_t  seen;             /* properties / parameters written */
    uint32_t  after;            /* need once this frame's value is done */
    uint32_t  req_cost;         /* of the required ones not written */
    uint16_t  node;             /* node, or the invoke's function */
    uint16_t  count;            /* members, items, invokes, parameters */
    int16_t   key;              /* the property / parameter being written */
    uint8_t   kind, pos;
    uint16_t  req_n;
    uint16_t  pad;
    uint32_t  pad2;
} gframe;

typedef struct glex {
    uint16_t  set, lo, hi, off; /* M_LIT */
    uint16_t  node;             /* M_NUM: 1 = integers only */
    uint8_t   mode;
    uint8_t   esc;              /* M_STR: 1 after '\\', 2..5 in \uXXXX */
    uint8_t   ulen, ulo, uhi;   /* UTF-8: continuation bytes to come */
    uint8_t   a, b, c;          /* M_NUM stage; M_RAW / M_GATE progress;
                                   M_STR: a surrogate escape; M_FREEKEY:
                                   a = bytes so far */
    uint16_t  pad;
} glex;

typedef struct gstate {
    glex      lx;
    uint32_t  depth;
    gframe    f[G_MAX_DEPTH];
} gstate;

struct sg_grammar_state {
    sg_grammar *g;
    gstate      st;
};

/* The bytes of a state that say what it is. */
static inline uint32_t
g_state_bytes(const gstate *s)
{
    return (uint32_t)(sizeof(glex) + sizeof(uint32_t)
                      + s->depth * sizeof(gframe));
}

struct sg_vocab {
    int        n_vocab;         /* the model's */
    int        n;               /* tokens walked */
    int32_t   *id;              /* sorted position -> id */
    uint32_t  *off;             /* into bytes, by sorted position */
    uint16_t  *len;
    uint16_t  *lcp;             /* common prefix with the one before */
    char      *bytes;
    /* by id, for advancing: -1 not in the walk */
    int32_t   *pos_of;
    int32_t    eos;
};

/* machine.c */
void g_state_init(const sg_grammar *g, gstate *s);
int g_step(const sg_grammar *g, gstate *s, uint8_t b);  /* 1 or 0 */
int32_t g_need(const sg_grammar *g, const gstate *s);
int g_done(const sg_grammar *g, const gstate *s);

/* vocab.c */
int g_vocab_prefixes(const sg_vocab *v, const char *s, int max, int *lens);

/* compile.c */
uint16_t *g_cover(sg_grammar *g, const char *s, int n);
int g_add_set(sg_grammar *g, int role, const char *const *s,
    const uint16_t *len, int n, char *err, int errlen);
void g_free_parts(sg_grammar *g);
void g_kmp(const char *p, int n, int *fail);

/* mask.c */
sg_grammar *g_new(const sg_vocab *v, int kind, const sg_grammar_opts *o,
    char *err, int errlen);

#endif
