/*
 * The automaton: one byte at a time (g_step), and the fewest bytes that
 * complete the output from a state (g_need).
 *
 * JSON: RFC 8259 values; whitespace only inside containers (none before
 * or after the root value); strings valid UTF-8 with no control bytes and
 * no \u escape of a surrogate; numbers -?(0|[1-9][0-9]*)(.[0-9]+)?
 * ([eE][+-]?[0-9]+)?, integers without fraction or exponent.
 *
 * DSML (encoding_dsv32.py's tool_calls_template, tool_call_template and
 * encode_arguments_to_dsml, and what parse_tool_calls accepts):
 *
 *   "\n\n<｜DSML｜function_calls>\n"
 *   ( "<｜DSML｜invoke name=\"" NAME "\">\n"
 *     ( "<｜DSML｜parameter name=\"" KEY "\" string=\"true\">" RAW
 *     | "<｜DSML｜parameter name=\"" KEY "\" string=\"false\">" JSON )
 *       "</｜DSML｜parameter>\n" ...
 *     ( "</｜DSML｜invoke>\n" | "\n</｜DSML｜invoke>\n" when no parameter ) )+
 *   "</｜DSML｜function_calls>"
 *
 * RAW is text, valid UTF-8 with no NUL, in which "｜DSML｜" appears only in
 * its terminator (the published parser ends a value at the first
 * "/｜DSML｜parameter").
 */
#include <string.h>

#include "grammar_internal.h"

#define PEND_TEXT  "</｜DSML｜parameter>\n"
#define DSML_TEXT  "｜DSML｜"
#define PSTART     "<｜DSML｜parameter name=\""

static const int pend_len = sizeof(PEND_TEXT) - 1;
static const int dsml_len = sizeof(DSML_TEXT) - 1;

/* Costs are in tokens (grammar_internal.h): literals at their fewest
 * tokens, the rest of JSON at a byte each. */

static inline gframe *
top(gstate *s)
{
    return &s->f[s->depth - 1];
}

static inline const gframe *
ctop(const gstate *s)
{
    return &s->f[s->depth - 1];
}

static inline int
is_ws(uint8_t b)
{
    return b == ' ' || b == '\n' || b == '\t' || b == '\r';
}

/* ------------------------------------------------------------ costs */

/* An object's close from "after a member": the required ones left, each
 * with its comma, and '}'. */
static uint32_t
obj_close_after(const gframe *f)
{
    return f->req_cost + f->req_n + 1;
}

/* The cheapest member a key may still name (after a comma, when no
 * required one is left), with the close after it. */
static uint32_t
obj_one_more(const sg_grammar *g, const gframe *f)
{
    const gnode *n = &g->nodes[f->node];
    uint32_t     best = UINT32_MAX;

    if (n->keys < 0)
        return 2 + 1 + g->nodes[n->extra].minlen + 1;   /* "":v} */
    for (int i = 0; i < n->n_props; i++) {
        if (!(f->seen >> i & 1) && n->prop_cost[i] < best)
            best = n->prop_cost[i];
    }
    return best == UINT32_MAX ? UINT32_MAX / 4 : best + 1;
}

static uint32_t
arr_rest(const sg_grammar *g, const gframe *f, int need_one)
{
    const gnode *n = &g->nodes[f->node];
    int          m = n->min_items - f->count;
    uint32_t     item = g->nodes[n->item].minlen;

    if (need_one && m < 1)
        m = 1;
    if (m < 0)
        m = 0;
    if (need_one)                        /* a value now, then ", v"s */
        return (uint32_t)m * item + (uint32_t)(m - 1) + 1;
    return (uint32_t)m * (item + 1) + 1;
}

/* A function's parameters left: the required ones and the invoke's
 * end. */
static uint32_t
invoke_rest(const sg_grammar *g, const gframe *f)
{
    return f->req_cost + g->c_invoke_end;
}

/* A parameter's node: its schema's, or node 0 (any value) for a function
 * that takes any parameters. */
static int
param_node(const gfunc *fn, int key)
{
    return fn->params >= 0 && key >= 0 ? fn->param_node[key] : 0;
}

static uint32_t
param_value_min(const sg_grammar *g, const gfunc *fn, int key, int string)
{
    const gnode *n = &g->nodes[param_node(fn, key)];

    if (string)
        return n->raw_lits >= 0 ? g->sets[n->raw_lits].min_cost : 0;
    return n->nonstr >= 0 ? g->nodes[n->nonstr].minlen : UINT32_MAX / 4;
}

/* string="true|false": the cheaper one a key allows, with the value. */
static uint32_t
param_type_min(const sg_grammar *g, const gfunc *fn, int key)
{
    const gnode *n = &g->nodes[param_node(fn, key)];
    uint32_t     t = UINT32_MAX / 4, f = UINT32_MAX / 4;

    if (n->raw_lits != -2)
        t = g->c_true + param_value_min(g, fn, key, 1);
    if (n->nonstr >= 0)
        f = g->c_false + param_value_min(g, fn, key, 0);
    return t < f ? t : f;
}

static uint32_t
frame_need(const sg_grammar *g, const gframe *f)
{
    const gnode *n;
    const gfunc *fn;
    uint32_t     best;

    switch (f->kind) {
    case F_ROOT:
        return f->pos == R_AT_VALUE ? g->nodes[f->node].minlen : 0;

    case F_OBJ:
        n = &g->nodes[f->node];
        switch (f->pos) {
        case O_FIRST:
            return f->req_n > 0 ? f->req_cost + f->req_n - 1 + 1 : 1;
        case O_KEY:
            return f->req_n > 0 ? f->req_cost + f->req_n - 1 + 1
                                : obj_one_more(g, f);
        case O_COLON:
        case O_VALUE: {
            int child = f->key >= 0 ? n->prop_node[f->key] : n->extra;
            return (f->pos == O_COLON) + g->nodes[child].minlen
                   + obj_close_after(f);
        }
        case O_AFTER:
            return obj_close_after(f);
        default:                         /* O_KEYSCAN: the lexer's */
            return 0;
        }

    case F_ARR:
        switch (f->pos) {
        case A_FIRST:
            return g->nodes[f->node].min_items > 0 ? arr_rest(g, f, 1) : 1;
        case A_VALUE:
            return arr_rest(g, f, 1);
        default:
            return arr_rest(g, f, 0);
        }

    case F_BLOCK:
        switch (f->pos) {
        case B_OPEN:
            return g->sets[g->s_open].min_cost + g->first_cost;
        case B_FIRST:
            return g->first_cost;
        case B_NAME:
            return g->first_cost - g->sets[g->s_invoke].min_cost;
        case B_NEXT:
            return g->c_calls_end;
        default:
            return 0;
        }

    case F_INVOKE:
        fn = &g->funcs[f->node];
        switch (f->pos) {
        case I_PARAMS:
            return invoke_rest(g, f);
        case I_PKEY:
            if (fn->params < 0)
                return 1 + 1 + g->c_keyrest + param_type_min(g, fn, -1)
                       + g->c_pend + invoke_rest(g, f);
            best = UINT32_MAX / 4;
            for (int i = 0; i < fn->n_params; i++) {
                uint32_t c;
                if (f->seen >> i & 1)
                    continue;
                c = fn->param_cost[i] - g->c_pstart     /* written */
                    + f->req_cost - (fn->required >> i & 1
                                     ? fn->param_cost[i] : 0);
                if (c < best)
                    best = c;
            }
            return best + g->c_invoke_end;
        case I_PTYPE:
            return param_type_min(g, fn, f->key) + g->c_pend
                   + invoke_rest(g, f);
        case I_PVALUE:
            return param_value_min(g, fn, f->key, 0) + g->c_pend
                   + invoke_rest(g, f);
        case I_PEND:
            return g->c_pend + invoke_rest(g, f);
        default:                         /* I_FKEY: the name's end */
            return 1 + g->c_keyrest + param_type_min(g, fn, -1)
                   + g->c_pend + invoke_rest(g, f);
        }
    }
    return 0;
}

/* What completing literal i of a structural set still costs, beyond the
 * literal, up to the end of the top frame (not counting its "after"). */
static uint32_t
lit_after(const sg_grammar *g, const gstate *s, const glits *set, int i)
{
    const gframe *f = ctop(s);
    const gnode  *n;
    const gfunc  *fn;
    gframe        t;

    switch (set->role) {
    case R_KEY: {
        int req;
        n = &g->nodes[f->node];
        req = (int)(n->required >> i & 1);
        t = *f;
        t.req_cost -= req ? n->prop_cost[i] : 0;
        t.req_n -= req;
        return 1 + g->nodes[n->prop_node[i]].minlen + obj_close_after(&t);
    }
    case R_OPEN:
        return g->first_cost;
    case R_INVOKE:
        return g->first_cost - set->min_cost;
    case R_NEXT:
        return set->s[i][1] == '/' ? 0
               : g->first_cost - g->sets[g->s_invoke].min_cost;
    case R_NAME:
        return g->funcs[i].min_body + g->c_calls_end;
    case R_PARAM:
        if (set->s[i][0] == '<' && set->s[i][1] != '/') {
            t = *f;
            t.pos = I_PKEY;
            return frame_need(g, &t);
        }
        return 0;                        /* the invoke ends */
    case R_PKEY: {
        int req;
        fn = &g->funcs[f->node];
        req = (int)(fn->required >> i & 1);
        t = *f;
        t.req_cost -= req ? fn->param_cost[i] : 0;
        t.key = (int16_t)i;
        return param_type_min(g, fn, i) + g->c_pend + invoke_rest(g, &t);
    }
    case R_PKEYREST:
        fn = &g->funcs[f->node];
        return param_type_min(g, fn, -1) + g->c_pend + invoke_rest(g, f);
    case R_PTYPE:
        fn = &g->funcs[f->node];
        return param_value_min(g, fn, f->key, set->s[i][0] == 't')
               + g->c_pend + invoke_rest(g, f);
    case R_PEND:
        return invoke_rest(g, f);
    }
    return 0;
}

static int
structural(int role)
{
    return role != R_VALUE && role != R_RAWVALUE;
}

static int lit_allowed(const sg_grammar *g, const gstate *s,
    const glits *set, int i);

/* The cheapest literal of the range to finish, with what follows. */
static uint32_t
lit_need(const sg_grammar *g, const gstate *s)
{
    const glex  *lx = &s->lx;
    const glits *set = &g->sets[lx->set];
    uint32_t     best = UINT32_MAX / 4, c;

    for (int i = lx->lo; i < lx->hi; i++) {
        if (!lit_allowed(g, s, set, i))
            continue;
        c = set->cover[i][lx->off];
        if (structural(set->role))
            c += lit_after(g, s, set, i);
        if (c < best)
            best = c;
    }
    return best;
}

int32_t
g_need(const sg_grammar *g, const gstate *s)
{
    const glex   *lx = &s->lx;
    const gframe *f = ctop(s);
    uint32_t      n = 0;

    switch (lx->mode) {
    case M_GATE:
        n = g->gate_cover[lx->a];
        break;
    case M_STR:
        n = 1 + lx->ulen + (lx->esc == 1 ? 1 : lx->esc >= 2 ? 6 - lx->esc
                                                             : 0);
        break;
    case M_NUM:
        /* stages that still need a digit: after '-', '.', 'e', the sign */
        n = (lx->a == 0 || lx->a == 3 || lx->a == 5 || lx->a == 6);
        break;
    case M_LIT:
        n = lit_need(g, s);
        if (structural(g->sets[lx->set].role)) {
            uint64_t t = (uint64_t)n + f->after;
            return t > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)t;
        }
        break;
    case M_RAW:
        /* a character begun inside the terminator is the terminator's */
        n = (lx->a > 0 ? 0 : lx->ulen)
            + g->sets[g->s_pend].cover[0][lx->a];
        break;
    case M_FREEKEY:
        n = lx->ulen + (lx->a == 0);
        break;
    }
    {
        uint64_t t = (uint64_t)n + frame_need(g, f) + f->after;
        return t > INT32_MAX / 2 ? INT32_MAX / 2 : (int32_t)t;
    }
}

int
g_done(const sg_grammar *g, const gstate *s)
{
    const gframe *f = ctop(s);

    return s->depth == 1 && s->lx.mode == M_IDLE
           && ((f->kind == F_ROOT && f->pos == R_AT_DONE)
               || (f->kind == F_BLOCK && f->pos == B_DONE));
}

/* ------------------------------------------------------------ frames */

static int
push(const sg_grammar *g, gstate *s, int kind, int node, int pos)
{
    gframe *p = top(s), *c;

    if (s->depth >= G_MAX_DEPTH)
        return 0;
    c = &s->f[s->depth];
    memset(c, 0, sizeof(*c));
    c->kind = (uint8_t)kind;
    c->node = (uint16_t)node;
    c->pos = (uint8_t)pos;
    c->key = -1;
    c->after = frame_need(g, p) + p->after;
    if (kind == F_OBJ) {
        c->req_cost = g->nodes[node].req_cost;
        c->req_n = (uint16_t)g->nodes[node].req_n;
    } else if (kind == F_INVOKE) {
        c->req_cost = g->funcs[node].req_cost;
        c->req_n = (uint16_t)g->funcs[node].req_n;
    }
    s->depth++;
    return 1;
}

static void
lit_start(gstate *s, int set, const glits *l)
{
    s->lx.mode = M_LIT;
    s->lx.set = (uint16_t)set;
    s->lx.lo = 0;
    s->lx.hi = (uint16_t)l->n;
    s->lx.off = 0;
}

static int lit_byte(const sg_grammar *g, gstate *s, uint8_t b);

/* A value of node starts with b; the frame on top is already where it
 * goes when the value is done. */
static int
value_start(const sg_grammar *g, gstate *s, int node, uint8_t b)
{
    const gnode *n = &g->nodes[node];

    if (n->lits >= 0) {
        lit_start(s, n->lits, &g->sets[n->lits]);
        return lit_byte(g, s, b);
    }
    if (b == '"' && (n->types & T_STR)) {
        s->lx.mode = M_STR;
        s->lx.esc = s->lx.ulen = 0;
        s->lx.c = 0;
        return 1;
    }
    if ((b == '-' || (b >= '0' && b <= '9')) && (n->types & (T_INT | T_NUM))) {
        s->lx.mode = M_NUM;
        s->lx.node = !(n->types & T_NUM);
        s->lx.a = b == '-' ? 0 : b == '0' ? 1 : 2;
        return 1;
    }
    if ((b == 't' || b == 'f') && (n->types & T_BOOL)) {
        lit_start(s, g->s_bool, &g->sets[g->s_bool]);
        return lit_byte(g, s, b);
    }
    if (b == 'n' && (n->types & T_NULL)) {
        lit_start(s, g->s_null, &g->sets[g->s_null]);
        return lit_byte(g, s, b);
    }
    if (b == '{' && (n->types & T_OBJ))
        return push(g, s, F_OBJ, node, O_FIRST);
    if (b == '[' && (n->types & T_ARR))
        return push(g, s, F_ARR, node, A_FIRST);
    return 0;
}

/* A byte with the lexer idle: the frame on top takes it. */
static int
frame_byte(const sg_grammar *g, gstate *s, uint8_t b)
{
    gframe      *f = top(s);
    const gnode *n;
    const gfunc *fn;

    switch (f->kind) {
    case F_ROOT:
        if (f->pos != R_AT_VALUE)
            return 0;
        f->pos = R_AT_DONE;
        return value_start(g, s, f->node, b);

    case F_OBJ:
        n = &g->nodes[f->node];
        if (is_ws(b) && f->pos != O_KEYSCAN)
            return 1;
        switch (f->pos) {
        case O_FIRST:
        case O_KEY:
            if (b == '}' && f->pos == O_FIRST && f->req_n == 0) {
                s->depth--;
                return 1;
            }
            if (b != '"' || (n->keys >= 0 && n->n_props == 0))
                return 0;
            if (n->keys < 0) {                   /* any key */
                f->pos = O_COLON;
                f->key = -1;
                f->count++;
                s->lx.mode = M_STR;
                s->lx.esc = s->lx.ulen = 0;
                s->lx.c = 0;
                return 1;
            }
            f->pos = O_KEYSCAN;
            lit_start(s, n->keys, &g->sets[n->keys]);
            return lit_byte(g, s, b);
        case O_COLON:
            if (b != ':')
                return 0;
            f->pos = O_VALUE;
            return 1;
        case O_VALUE:
            f->pos = O_AFTER;
            return value_start(g, s, f->key >= 0 ? n->prop_node[f->key]
                                                 : n->extra, b);
        case O_AFTER:
            if (b == '}' && f->req_n == 0) {
                s->depth--;
                return 1;
            }
            if (b != ',')
                return 0;
            if (n->keys >= 0 && f->count >= n->n_props)
                return 0;                        /* no name left */
            f->pos = O_KEY;
            return 1;
        }
        return 0;

    case F_ARR:
        n = &g->nodes[f->node];
        if (is_ws(b))
            return 1;
        switch (f->pos) {
        case A_FIRST:
            if (b == ']' && n->min_items == 0) {
                s->depth--;
                return 1;
            }
            if (n->max_items == 0)
                return 0;
            /* fall through */
        case A_VALUE:
            f->pos = A_AFTER;
            f->count++;
            return value_start(g, s, n->item, b);
        default:
            if (b == ']' && f->count >= n->min_items) {
                s->depth--;
                return 1;
            }
            if (b != ',' || (n->max_items >= 0 && f->count >= n->max_items))
                return 0;
            f->pos = A_VALUE;
            return 1;
        }

    case F_BLOCK: {
        int set;
        switch (f->pos) {
        case B_OPEN:  set = g->s_open; break;
        case B_FIRST: set = g->s_invoke; break;
        case B_NAME:  set = g->s_names; break;
        case B_NEXT:  set = g->s_next; break;
        default:      return 0;
        }
        lit_start(s, set, &g->sets[set]);
        return lit_byte(g, s, b);
    }

    case F_INVOKE:
        fn = &g->funcs[f->node];
        switch (f->pos) {
        case I_PARAMS:
            lit_start(s, g->s_param, &g->sets[g->s_param]);
            return lit_byte(g, s, b);
        case I_PKEY:
            if (fn->params >= 0) {
                lit_start(s, fn->params, &g->sets[fn->params]);
                return lit_byte(g, s, b);
            }
            f->pos = I_FKEY;
            f->key = -1;
            s->lx.mode = M_FREEKEY;
            s->lx.a = 0;
            s->lx.ulen = 0;
            /* the first byte of the name */
            break;
        case I_PTYPE:
            lit_start(s, g->s_type, &g->sets[g->s_type]);
            return lit_byte(g, s, b);
        case I_PVALUE: {
            const gnode *pn = &g->nodes[param_node(fn, f->key)];
            f->pos = I_PEND;
            return value_start(g, s, pn->nonstr, b);
        }
        case I_PEND:
            lit_start(s, g->s_pend, &g->sets[g->s_pend]);
            return lit_byte(g, s, b);
        default:
            return 0;
        }
        return g_step(g, s, b);
    }
    return 0;
}

/* ------------------------------------------------------------ lexers */

/* 1 when literal i may be completed here (names not written yet, the
 * invoke's end once its required parameters are in...). */
static int
lit_allowed(const sg_grammar *g, const gstate *s, const glits *set, int i)
{
    const gframe *f = ctop(s);
    const gnode  *n;

    switch (set->role) {
    case R_KEY:
    case R_PKEY:
        return !(f->seen >> i & 1);
    case R_NEXT:
        return set->s[i][1] == '/' || g->parallel;
    case R_PARAM:
        if (set->s[i][0] == '\n')
            return f->count == 0 && f->req_n == 0;
        if (set->s[i][1] == '/')
            return f->req_n == 0;
        {
            const gfunc *fn = &g->funcs[f->node];
            return fn->params < 0 || f->count < fn->n_params;
        }
    case R_PTYPE:
        n = &g->nodes[param_node(&g->funcs[f->node], f->key)];
        return set->s[i][0] == 't' ? n->raw_lits != -2 : n->nonstr >= 0;
    }
    return 1;
}

/* The literal is written: what it means. */
static int
lit_complete(const sg_grammar *g, gstate *s, const glits *set, int i)
{
    gframe      *f = top(s);
    const gnode *n;
    const gfunc *fn;

    s->lx.mode = M_IDLE;
    switch (set->role) {
    case R_KEY:
        n = &g->nodes[f->node];
        f->seen |= (uint64_t)1 << i;
        if (n->required >> i & 1) {
            f->req_cost -= n->prop_cost[i];
            f->req_n--;
        }
        f->count++;
        f->key = (int16_t)i;
        f->pos = O_COLON;
        return 1;
    case R_OPEN:
        f->pos = B_FIRST;
        return 1;
    case R_INVOKE:
        f->pos = B_NAME;
        return 1;
    case R_NEXT:
        f->pos = set->s[i][1] == '/' ? B_DONE : B_NAME;
        return 1;
    case R_NAME:
        f->pos = B_NEXT;
        f->count++;
        return push(g, s, F_INVOKE, i, I_PARAMS);
    case R_PARAM:
        if (set->s[i][0] == '<' && set->s[i][1] != '/') {
            f->pos = I_PKEY;
            return 1;
        }
        s->depth--;                              /* the invoke's end */
        return 1;
    case R_PKEY:
        fn = &g->funcs[f->node];
        f->seen |= (uint64_t)1 << i;
        if (fn->required >> i & 1) {
            f->req_cost -= fn->param_cost[i];
            f->req_n--;
        }
        f->count++;
        f->key = (int16_t)i;
        f->pos = I_PTYPE;
        return 1;
    case R_PKEYREST:
        f->count++;
        f->pos = I_PTYPE;
        return 1;
    case R_PTYPE:
        if (set->s[i][0] == 'f') {
            f->pos = I_PVALUE;
            return 1;
        }
        n = &g->nodes[param_node(&g->funcs[f->node], f->key)];
        if (n->raw_lits >= 0) {
            f->pos = I_PEND;
            lit_start(s, n->raw_lits, &g->sets[n->raw_lits]);
            return 1;
        }
        f->pos = I_PARAMS;
        s->lx.mode = M_RAW;
        s->lx.a = s->lx.b = 0;
        s->lx.ulen = 0;
        return 1;
    case R_PEND:
        f->pos = I_PARAMS;
        return 1;
    }
    return 1;                                    /* R_VALUE, R_RAWVALUE */
}

static int
lit_byte(const sg_grammar *g, gstate *s, uint8_t b)
{
    glex        *lx = &s->lx;
    const glits *set = &g->sets[lx->set];
    int          lo = lx->lo, hi = lx->hi, off = lx->off, nlo, nhi, any = 0;

    /* [nlo, nhi): those of the range whose next byte is b */
    nlo = lo;
    while (nlo < hi && (set->len[nlo] <= off
                        || (uint8_t)set->s[nlo][off] < b))
        nlo++;
    nhi = nlo;
    while (nhi < hi && set->len[nhi] > off && (uint8_t)set->s[nhi][off] == b)
        nhi++;
    for (int i = nlo; i < nhi && !any; i++)
        any = lit_allowed(g, s, set, i);
    if (!any) {
        /* no way on: the shortest, if whole here, ends before b */
        if (set->len[lo] == off && lit_allowed(g, s, set, lo)) {
            if (!lit_complete(g, s, set, lo))
                return 0;
            return g_step(g, s, b);
        }
        return 0;
    }
    lx->lo = (uint16_t)nlo;
    lx->hi = (uint16_t)nhi;
    lx->off = (uint16_t)(off + 1);
    if (set->len[nlo] == off + 1 && lit_allowed(g, s, set, nlo)) {
        /* whole: end it now unless a longer one may go on */
        int longer = 0;
        for (int i = nlo + 1; i < nhi && !longer; i++)
            longer = lit_allowed(g, s, set, i);
        if (!longer)
            return lit_complete(g, s, set, nlo);
    }
    return 1;
}

/* UTF-8: a lead byte sets what its continuation bytes must be. */
static int
utf8_byte(glex *lx, uint8_t b)
{
    if (lx->ulen > 0) {
        if (b < lx->ulo || b > lx->uhi)
            return 0;
        lx->ulen--;
        lx->ulo = 0x80;
        lx->uhi = 0xBF;
        return 1;
    }
    lx->ulo = 0x80;
    lx->uhi = 0xBF;
    if (b < 0x80)
        return 1;
    if (b >= 0xC2 && b <= 0xDF) {
        lx->ulen = 1;
    } else if (b >= 0xE0 && b <= 0xEF) {
        lx->ulen = 2;
        if (b == 0xE0)
            lx->ulo = 0xA0;
        if (b == 0xED)
            lx->uhi = 0x9F;
    } else if (b >= 0xF0 && b <= 0xF4) {
        lx->ulen = 3;
        if (b == 0xF0)
            lx->ulo = 0x90;
        if (b == 0xF4)
            lx->uhi = 0x8F;
    } else {
        return 0;
    }
    return 1;
}

static int
hex(uint8_t b)
{
    return (b >= '0' && b <= '9') || (b >= 'a' && b <= 'f')
           || (b >= 'A' && b <= 'F');
}

static int
str_byte(glex *lx, uint8_t b)
{
    if (lx->ulen > 0)
        return utf8_byte(lx, b);
    if (lx->esc == 1) {
        if (b == 'u') {
            lx->esc = 2;
            lx->c = 0;
            return 1;
        }
        if (!strchr("\"\\/bfnrt", b) || b == 0)
            return 0;
        lx->esc = 0;
        return 1;
    }
    if (lx->esc >= 2) {
        if (!hex(b))
            return 0;
        /* no surrogates: \uD800-\uDFFF */
        if (lx->esc == 2 && (b == 'd' || b == 'D'))
            lx->c = 1;
        if (lx->esc == 3 && lx->c && ((b >= '8' && b <= '9')
                                      || (b | 0x20) >= 'a'))
            return 0;
        lx->esc = lx->esc == 5 ? 0 : lx->esc + 1;
        return 1;
    }
    if (b == '"') {
        lx->mode = M_IDLE;
        return 1;
    }
    if (b == '\\') {
        lx->esc = 1;
        return 1;
    }
    if (b < 0x20)
        return 0;
    return utf8_byte(lx, b);
}

/* Number stages: 0 after '-', 1 a leading 0, 2 integer digits, 3 after
 * '.', 4 fraction digits, 5 after 'e', 6 after its sign, 7 exponent
 * digits.  -1: the number ended before b. */
static int
num_byte(glex *lx, uint8_t b)
{
    int digit = b >= '0' && b <= '9', intonly = lx->node;

    switch (lx->a) {
    case 0:
        if (!digit)
            return 0;
        lx->a = b == '0' ? 1 : 2;
        return 1;
    case 1:
    case 2:
        if (digit)
            return lx->a == 2 ? 1 : 0;
        if (b == '.' && !intonly) {
            lx->a = 3;
            return 1;
        }
        if ((b == 'e' || b == 'E') && !intonly) {
            lx->a = 5;
            return 1;
        }
        return -1;
    case 3:
        if (!digit)
            return 0;
        lx->a = 4;
        return 1;
    case 4:
        if (digit)
            return 1;
        if (b == 'e' || b == 'E') {
            lx->a = 5;
            return 1;
        }
        return -1;
    case 5:
        if (b == '+' || b == '-') {
            lx->a = 6;
            return 1;
        }
        /* fall through */
    case 6:
        if (!digit)
            return 0;
        lx->a = 7;
        return 1;
    default:
        return digit ? 1 : -1;
    }
}

/* DSML raw text up to "</｜DSML｜parameter>\n" (a = how much of it is
 * matched), where "｜DSML｜" (b = how much of it) may only follow "</". */
static int
raw_byte(const sg_grammar *g, glex *lx, uint8_t b)
{
    static const char term[] = PEND_TEXT, dsml[] = DSML_TEXT;
    int q = lx->b;

    if (b == 0)
        return 0;
    if (lx->ulen > 0 || b >= 0x80) {
        if (!utf8_byte(lx, b))
            return 0;
    }
    lx->a = (uint8_t)term[lx->a] == b ? lx->a + 1 : b == '<';
    while (q > 0 && (uint8_t)dsml[q] != b)
        q = g->d_fail[q - 1];
    if ((uint8_t)dsml[q] == b)
        q++;
    if (q == dsml_len) {
        if (lx->a != 2 + dsml_len)
            return 0;
        q = g->d_fail[q - 1];
    }
    lx->b = (uint8_t)q;
    if (lx->a == pend_len)
        lx->mode = M_IDLE;                       /* the value is done */
    return 1;
}

static int
gate_byte(const sg_grammar *g, glex *lx, uint8_t b)
{
    int k = lx->a;

    while (k > 0 && (uint8_t)g->gate[k] != b)
        k = g->gate_fail[k - 1];
    if ((uint8_t)g->gate[k] == b)
        k++;
    if (k == g->gate_len) {
        lx->mode = M_IDLE;
        k = 0;
    }
    lx->a = (uint8_t)k;
    return 1;
}

int
g_step(const sg_grammar *g, gstate *s, uint8_t b)
{
    glex *lx = &s->lx;
    int   r;

    switch (lx->mode) {
    case M_GATE:
        return gate_byte(g, lx, b);
    case M_STR:
        return str_byte(lx, b);
    case M_NUM:
        r = num_byte(lx, b);
        if (r >= 0)
            return r;
        lx->mode = M_IDLE;
        return frame_byte(g, s, b);
    case M_LIT:
        return lit_byte(g, s, b);
    case M_RAW:
        return raw_byte(g, lx, b);
    case M_FREEKEY:
        if (lx->ulen == 0 && b == '"') {
            if (lx->a == 0)
                return 0;
            lit_start(s, g->s_keyrest, &g->sets[g->s_keyrest]);
            return 1;
        }
        if (lx->ulen == 0 && (b < 0x20 || b == '<' || b == '\\'))
            return 0;
        if (!utf8_byte(lx, b))
            return 0;
        lx->a = 1;
        return 1;
    default:
        return frame_byte(g, s, b);
    }
}

void
g_state_init(const sg_grammar *g, gstate *s)
{
    memset(s, 0, sizeof(*s));
    s->depth = 1;
    s->f[0].key = -1;
    if (g->kind == G_JSON) {
        s->f[0].kind = F_ROOT;
        s->f[0].node = (uint16_t)g->root;
        s->f[0].pos = R_AT_VALUE;
    } else {
        s->f[0].kind = F_BLOCK;
        s->f[0].pos = B_OPEN;
    }
    s->lx.mode = g->gate_len > 0 ? M_GATE : M_IDLE;
}
