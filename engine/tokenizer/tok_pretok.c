/*
 * The pre-tokenizer: the Split regexes of tokenizer.json, run with PCRE2.
 *
 * The patterns are written for the reference implementations, and the one
 * we must agree with id for id is JavaScript's (the npm package), so the
 * few escapes whose meaning differs between JS and PCRE2 are rewritten to
 * explicit classes before compiling:
 *   \s  JS: TAB LF VT FF CR, Zs, U+FEFF, U+2028, U+2029 (PCRE2's UCP \s
 *       lacks U+FEFF; its non-UCP \s lacks all but ASCII),
 *   \d \w  ASCII only in JS,
 *   .   anything but LF CR U+2028 U+2029,
 *   $   end of input only (PCRE2_DOLLAR_ENDONLY),
 *   \p{L} \p{M} \p{N} \p{P} \p{S}  Node's Unicode is newer than this
 *       PCRE2's: the characters it adds are listed explicitly
 *       (tok_unicode_extra.c).
 * Each Split runs on every piece of the previous one on its own, as both
 * the JS and the Rust tokenizers do, so a look-ahead never sees past the
 * end of its piece.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "util/strbuf.h"
#include "tok_internal.h"

#define JS_SPACE "\\t\\n\\x0B\\f\\r\\p{Zs}\\x{FEFF}\\x{2028}\\x{2029}"

/* Rewrites one JS escape at p[0] == '\\'; returns the bytes consumed or 0
 * with err set. */
static size_t
translate_escape(const char *p, int in_class, int newer, sg_strbuf *b, char *err,
    int errlen)
{
    char c = p[1];

    switch (c) {
    case '\0':
        snprintf(err, errlen, "pattern ends with a backslash");
        return 0;
    case 's':
        sg_strbuf_str(b, in_class ? JS_SPACE : "[" JS_SPACE "]");
        return 2;
    case 'd':
        sg_strbuf_str(b, in_class ? "0-9" : "[0-9]");
        return 2;
    case 'w':
        sg_strbuf_str(b, in_class ? "A-Za-z0-9_" : "[A-Za-z0-9_]");
        return 2;
    case 'S': case 'D': case 'W':
        if (in_class) {
            snprintf(err, errlen, "\\%c inside a character class is not "
                     "supported", c);
            return 0;
        }
        sg_strbuf_str(b, c == 'S' ? "[^" JS_SPACE "]"
                  : c == 'D' ? "[^0-9]" : "[^A-Za-z0-9_]");
        return 2;
    case 'u':
        if (p[2] == '{') {
            const char *e = strchr(p + 3, '}');
            if (e == NULL) {
                snprintf(err, errlen, "unterminated \\u{...}");
                return 0;
            }
            sg_strbuf_str(b, "\\x{");
            sg_strbuf_add(b, p + 3, (size_t)(e - (p + 3)));
            sg_strbuf_str(b, "}");
            return (size_t)(e - p) + 1;
        }
        for (int i = 2; i < 6; i++) {
            if (p[i] == '\0'
                || strchr("0123456789abcdefABCDEF", p[i]) == NULL) {
                snprintf(err, errlen, "bad \\u escape");
                return 0;
            }
        }
        sg_strbuf_str(b, "\\x{");
        sg_strbuf_add(b, p + 2, 4);
        sg_strbuf_str(b, "}");
        return 6;
    case 'p':
        /* General categories: plus what a newer Unicode added. */
        if (newer && p[2] == '{' && p[3] != '\0' && strchr("LMNPS", p[3])
            && p[4] == '}') {
            const char *extra = p[3] == 'L' ? tok_extra_L
                              : p[3] == 'M' ? tok_extra_M
                              : p[3] == 'N' ? tok_extra_N
                              : p[3] == 'P' ? tok_extra_P : tok_extra_S;
            if (!in_class) sg_strbuf_str(b, "[");
            sg_strbuf_add(b, p, 5);
            sg_strbuf_str(b, extra);
            if (!in_class) sg_strbuf_str(b, "]");
            return 5;
        }
        sg_strbuf_add(b, p, 2);
        return 2;
    default:
        /* \p{..}, \x.., \n, \[, \#, ...: the same in PCRE2. */
        sg_strbuf_add(b, p, 2);
        return 2;
    }
}

pcre2_code *
tok_compile_js_regex(const char *pat, int newer, int *jit, char *err,
    int errlen)
{
    sg_strbuf b = { 0 };
    int in_class = 0;
    const char *p = pat;
    pcre2_code *re;
    int code;
    PCRE2_SIZE at;

    while (*p) {
        if (*p == '\\') {
            size_t k = translate_escape(p, in_class, newer, &b, err, errlen);
            if (k == 0) {
                free(b.p);
                return NULL;
            }
            p += k;
        } else if (!in_class && *p == '[') {
            /* JS's [] matches nothing and [^] anything; PCRE2 would read
             * the ']' as a literal. */
            if (p[1] == ']') {
                sg_strbuf_str(&b, "(?!)");
                p += 2;
            } else if (p[1] == '^' && p[2] == ']') {
                sg_strbuf_str(&b, "(?s:.)");
                p += 3;
            } else {
                in_class = 1;
                sg_strbuf_add(&b, p, 1);
                p++;
                if (*p == '^') {
                    sg_strbuf_add(&b, p, 1);
                    p++;
                }
                continue;
            }
        } else if (in_class && *p == '[') {
            sg_strbuf_str(&b, "\\[");     /* never a POSIX class, as in JS */
            p++;
        } else if (in_class && *p == ']') {
            in_class = 0;
            sg_strbuf_add(&b, p, 1);
            p++;
        } else if (!in_class && *p == '.') {
            sg_strbuf_str(&b, "[^\\n\\r\\x{2028}\\x{2029}]");
            p++;
        } else {
            sg_strbuf_add(&b, p, 1);
            p++;
        }
    }
    if (b.oom || b.p == NULL) {
        free(b.p);
        snprintf(err, errlen, b.oom ? "out of memory" : "empty pattern");
        return NULL;
    }
    re = pcre2_compile((PCRE2_SPTR)b.p, b.n,
                       PCRE2_UTF | PCRE2_UCP | PCRE2_DOLLAR_ENDONLY,
                       &code, &at, NULL);
    if (re == NULL) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(code, msg, sizeof(msg));
        snprintf(err, errlen, "regex does not compile (%s at offset %zu "
                 "of the rewritten pattern)", (char *)msg, (size_t)at);
        free(b.p);
        return NULL;
    }
    free(b.p);
    /* Without JIT (not built in, or no executable memory) the
     * interpreter runs it. */
    *jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0;
    return re;
}

pcre2_match_context *
tok_match_context(void)
{
    pcre2_match_context *m = pcre2_match_context_create(NULL);

    if (m != NULL) {
        pcre2_set_match_limit(m, UINT32_MAX);
        pcre2_set_depth_limit(m, UINT32_MAX);
        pcre2_set_heap_limit(m, UINT32_MAX);
    }
    return m;
}

/* One match; retries without JIT if the JIT stack runs out.  Returns 1
 * (match at [*ms, *me)), 0 (none) or -1. */
static int
match_at(const sg_tokenizer *t, const tok_split *sp, int v, const char *s,
    size_t n, size_t from, pcre2_match_data *md, size_t *ms, size_t *me)
{
    const pcre2_code *re = sp->re[v];
    /* The JIT entry point skips pcre2_match's option checks; the text is
     * known to be valid UTF-8. */
    int rc = sp->jit[v] ? pcre2_jit_match(re, (PCRE2_SPTR)s, n, from, 0, md,
                                       t->mctx)
                     : pcre2_match(re, (PCRE2_SPTR)s, n, from,
                                   PCRE2_NO_UTF_CHECK, md, t->mctx);
    if (rc == PCRE2_ERROR_JIT_STACKLIMIT) {
        rc = pcre2_match(re, (PCRE2_SPTR)s, n, from,
                         PCRE2_NO_UTF_CHECK | PCRE2_NO_JIT, md, t->mctx);
    }
    if (rc == PCRE2_ERROR_NOMATCH) return 0;
    if (rc < 0) return -1;
    PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    *ms = ov[0];
    *me = ov[1];
    return 1;
}

static int
split_level(const sg_tokenizer *t, int level, int v, const char *s,
    size_t off, size_t n, pcre2_match_data *md, tok_piece_fn fn, void *ctx);

static inline int
emit(const sg_tokenizer *t, int level, int v, const char *s, size_t off,
    size_t n, pcre2_match_data *md, tok_piece_fn fn, void *ctx)
{
    if (n == 0) return 0;
    if (level + 1 == t->n_splits) return fn(ctx, off, n);
    return split_level(t, level + 1, v, s, off, n, md, fn, ctx);
}

static int
split_level(const sg_tokenizer *t, int level, int v, const char *s,
    size_t off, size_t n, pcre2_match_data *md, tok_piece_fn fn, void *ctx)
{
    const tok_split *sp = &t->splits[level];
    const char *sub = s + off;
    size_t prev = 0, from = 0, ms, me;
    int rc, vv = v;

    /* v < 0: the section has characters of newer Unicode somewhere; use
     * the slower exact regex only on the spans that have them. */
    if (v < 0) vv = tok_has_newer_chars(t, sub, n);

    while (from <= n) {
        rc = match_at(t, sp, vv, sub, n, from, md, &ms, &me);
        if (rc < 0) return -1;
        if (rc == 0) break;
        if (sp->kind != TOK_SPLIT_MATCHES && ms > prev) {
            if (emit(t, level, v, s, off + prev, ms - prev, md, fn, ctx)) {
                return -1;
            }
        }
        if (sp->kind != TOK_SPLIT_REMOVED && me > ms) {
            if (emit(t, level, v, s, off + ms, me - ms, md, fn, ctx)) {
                return -1;
            }
        }
        prev = me;
        if (me > ms) {
            from = me;
        } else {
            /* An empty match: JS moves on by one character. */
            if (ms >= n) break;
            size_t k = tok_utf8_char_len((const unsigned char *)sub + ms,
                                         n - ms);
            from = ms + (k ? k : 1);
        }
    }
    if (sp->kind != TOK_SPLIT_MATCHES && prev < n) {
        if (emit(t, level, v, s, off + prev, n - prev, md, fn, ctx)) {
            return -1;
        }
    }
    return 0;
}

int
tok_pretokenize(const sg_tokenizer *t, const char *s, size_t n,
    int newer_unicode, pcre2_match_data *md, tok_piece_fn fn, void *ctx)
{
    if (n == 0) return 0;
    if (t->n_splits == 0) return fn(ctx, 0, n);
    return split_level(t, 0, newer_unicode ? -1 : 0, s, 0, n, md, fn, ctx);
}

int
tok_has_newer_chars(const sg_tokenizer *t, const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0;

    /* Everything added after Unicode 14 is at U+0800 or above. */
    while (i < n) {
        if (s[i] < 0xE0) {
            i++;
            continue;
        }
        uint32_t cp;
        if (s[i] < 0xF0) {
            cp = ((s[i] & 0x0Fu) << 12) | ((s[i + 1] & 0x3Fu) << 6)
                 | (s[i + 2] & 0x3Fu);
            i += 3;
        } else {
            cp = ((s[i] & 0x07u) << 18) | ((s[i + 1] & 0x3Fu) << 12)
                 | ((s[i + 2] & 0x3Fu) << 6) | (s[i + 3] & 0x3Fu);
            i += 4;
        }
        if (t->newer_cp[cp >> 3] & (1u << (cp & 7))) return 1;
    }
    return 0;
}

/* Parses the "\\x{A}-\\x{B}\\x{C}..." lists of tok_unicode_extra.c into
 * the bitmap. */
static void
mark_ranges(uint8_t *bits, const char *s)
{
    while ((s = strstr(s, "\\x{")) != NULL) {
        unsigned long a = strtoul(s + 3, (char **)&s, 16), b = a;
        s++;                                    /* the '}' */
        if (s[0] == '-' && s[1] == '\\' && s[2] == 'x') {
            b = strtoul(s + 4, (char **)&s, 16);
            s++;
        }
        for (unsigned long c = a; c <= b && c < 0x110000; c++) {
            bits[c >> 3] |= (uint8_t)(1u << (c & 7));
        }
    }
}

uint8_t *
tok_newer_bitmap(void)
{
    uint8_t *bits = calloc(0x110000 / 8, 1);

    if (bits != NULL) {
        mark_ranges(bits, tok_extra_L);
        mark_ranges(bits, tok_extra_M);
        mark_ranges(bits, tok_extra_N);
        mark_ranges(bits, tok_extra_P);
        mark_ranges(bits, tok_extra_S);
    }
    return bits;
}
