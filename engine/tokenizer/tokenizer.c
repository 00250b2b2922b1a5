/*
 * Encoding: added tokens first (longest match, left to right, as the JS
 * reference's trie does), then for the text between them the Split
 * regexes and BPE of each piece, with a per-call cache of pieces already
 * seen (words repeat a lot, so most pieces never reach BPE).
 *
 * Invalid UTF-8: a JavaScript string cannot hold it, so the JS reference
 * only ever sees each ill-formed subsequence as one U+FFFD (TextDecoder's
 * rule).  We run the regexes on exactly that text, so the pieces fall
 * where the reference puts them, but BPE then encodes the piece's original
 * bytes, so decode(encode(x)) == x for any bytes.  Valid text gives the
 * reference's ids exactly.
 */
#include <stdlib.h>
#include <string.h>

#include "tok_internal.h"

typedef struct enc {
    const sg_tokenizer *t;
    int32_t     *ids;
    size_t       n, cap;
    tok_piece_cache cache;
    tok_bpe_scratch sc;
    const char  *orig;      /* the bytes pieces are cut from */
    const size_t *map;      /* sanitized offset -> orig offset, or NULL */
} enc;

static int
reserve_ids(int32_t **p, size_t *cap, size_t need)
{
    size_t c = *cap ? *cap : 256;
    int32_t *q;

    if (need <= *cap) return 0;
    while (c < need) c *= 2;
    q = realloc(*p, c * sizeof(int32_t));
    if (q == NULL) return -1;
    *p = q;
    *cap = c;
    return 0;
}

/* Encodes one final piece, given by its original bytes.  BPE writes
 * straight into the output (a piece of n bytes is at most n ids). */
static int
encode_piece(enc *e, const char *p, size_t n)
{
    const int32_t *hit;
    uint64_t h = 0;
    size_t k;
    int m;

    if (reserve_ids(&e->ids, &e->cap, e->n + n) != 0) return -1;
    if (n == 1) {
        e->ids[e->n++] = e->t->byte_id[(unsigned char)p[0]];
        return 0;
    }
    if (n <= TOK_CACHE_MAX_PIECE) {
        hit = tok_piece_cache_get(&e->cache, p, n, &h, &k);
        if (hit != NULL) {
            /* Mostly one to three ids: a plain loop beats memcpy. */
            for (size_t i = 0; i < k; i++) e->ids[e->n + i] = hit[i];
            e->n += k;
            return 0;
        }
    }
    m = tok_bpe(e->t, p, n, &e->sc, e->ids + e->n);
    if (m < 0) return -1;
    if (n <= TOK_CACHE_MAX_PIECE
        && tok_piece_cache_put(&e->cache, p, n, h, e->ids + e->n,
                               (size_t)m) != 0) {
        return -1;
    }
    e->n += (size_t)m;
    return 0;
}

static int
push_ids(enc *e, const int32_t *ids, size_t n)
{
    if (reserve_ids(&e->ids, &e->cap, e->n + n) != 0) return -1;
    memcpy(e->ids + e->n, ids, n * sizeof(int32_t));
    e->n += n;
    return 0;
}

static int
on_piece(void *ctx, size_t off, size_t len)
{
    enc *e = ctx;

    if (e->map == NULL) return encode_piece(e, e->orig + off, len);
    return encode_piece(e, e->orig + e->map[off],
                        e->map[off + len] - e->map[off]);
}

/* Text with invalid UTF-8: the regexes run on a copy where each
 * ill-formed subsequence is U+FFFD, pieces map back to original bytes. */
static int
encode_invalid(enc *e, const char *s, size_t n, pcre2_match_data *md)
{
    const unsigned char *u = (const unsigned char *)s;
    char *san = malloc(3 * n + 1);
    size_t *map = malloc((3 * n + 1) * sizeof(size_t));
    size_t i = 0, k = 0;
    int rc;

    if (san == NULL || map == NULL) {
        free(san);
        free(map);
        return -1;
    }
    while (i < n) {
        size_t c = tok_utf8_char_len(u + i, n - i);
        if (c > 0) {
            for (size_t j = 0; j < c; j++) {
                map[k] = i + j;
                san[k++] = s[i + j];
            }
            i += c;
        } else {
            c = tok_utf8_bad_len(u + i, n - i);
            map[k] = i;
            map[k + 1] = map[k + 2] = i;   /* never a piece boundary */
            memcpy(san + k, "\xEF\xBF\xBD", 3);
            k += 3;
            i += c;
        }
    }
    map[k] = n;
    e->orig = s;
    e->map = map;
    rc = tok_pretokenize(e->t, san, k, tok_has_newer_chars(e->t, san, k), md,
                         on_piece, e);
    e->map = NULL;
    free(san);
    free(map);
    return rc;
}

static int
encode_text(enc *e, const char *s, size_t n, pcre2_match_data *md)
{
    if (n == 0) return 0;
    if (tok_utf8_valid_prefix(s, n) < n) return encode_invalid(e, s, n, md);
    e->orig = s;
    e->map = NULL;
    return tok_pretokenize(e->t, s, n, tok_has_newer_chars(e->t, s, n), md,
                           on_piece, e);
}

/* The longest added token starting at s, or -1. */
static int
match_added(const sg_tokenizer *t, const char *s, size_t n, size_t *len)
{
    uint32_t node = 0;
    int best = -1;

    for (size_t i = 0; i < n; i++) {
        uint32_t key = ((node << 8) | (unsigned char)s[i]) + 1;
        uint32_t h = (key * 2654435761u) & t->trie_mask;

        while (t->trie[h].key != 0 && t->trie[h].key != key) {
            h = (h + 1) & t->trie_mask;
        }
        if (t->trie[h].key == 0) break;
        node = t->trie[h].child;
        if (t->node_added[node]) {
            best = t->node_added[node] - 1;
            *len = i + 1;
        }
    }
    return best;
}

/* Length of the JS-whitespace character (String.prototype.trim's set) at
 * s, or 0. */
static size_t
js_space_at(const unsigned char *s, size_t n)
{
    unsigned cp;
    size_t k;

    if (s[0] < 0x80) {
        return (s[0] == ' ' || (s[0] >= 9 && s[0] <= 13)) ? 1 : 0;
    }
    k = tok_utf8_char_len(s, n);
    if (k == 2) cp = ((s[0] & 0x1Fu) << 6) | (s[1] & 0x3Fu);
    else if (k == 3) cp = ((s[0] & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6)
                          | (s[2] & 0x3Fu);
    else return 0;
    if (cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A)
        || cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F
        || cp == 0x3000 || cp == 0xFEFF) {
        return k;
    }
    return 0;
}

static size_t
trim_start(const char *s, size_t n)
{
    size_t i = 0, k;

    while (i < n && (k = js_space_at((const unsigned char *)s + i, n - i))) {
        i += k;
    }
    return i;
}

static size_t
trim_end(const char *s, size_t n)
{
    /* Walk forward remembering where the last non-space run ended. */
    size_t i = 0, end = 0, k;

    while (i < n) {
        k = js_space_at((const unsigned char *)s + i, n - i);
        if (k) {
            i += k;
        } else {
            k = tok_utf8_char_len((const unsigned char *)s + i, n - i);
            i += k ? k : 1;
            end = i;
        }
    }
    return end;
}

/* The added token that may start at s[i] (-1 when none): anywhere, or
 * (spans) only wholly inside one of the [start, end) pairs given. */
static int
added_at(const sg_tokenizer *t, const char *s, size_t n, size_t i,
    const size_t *spans, int n_spans, int *span, size_t *len)
{
    size_t end = n;
    int a;

    if (!t->first_byte[(unsigned char)s[i]]) return -1;
    if (spans != NULL) {
        while (*span < n_spans && spans[2 * *span + 1] <= i) (*span)++;
        if (*span == n_spans || spans[2 * *span] > i) return -1;
        end = spans[2 * *span + 1];
    }
    a = match_added(t, s + i, end - i, len);
    return a;
}

static int
encode_all(enc *e, const char *s, size_t n, int special, const size_t *spans,
    int n_spans)
{
    const sg_tokenizer *t = e->t;
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    size_t start = 0, i = 0, len = 0;
    int rstrip = 0, rc = 0, span = 0;

    if (md == NULL) return -1;
    while (special && i < n && rc == 0) {
        int a = added_at(t, s, n, i, spans, n_spans, &span, &len);
        if (a < 0) {
            i++;
            continue;
        }
        /* lstrip / rstrip eat the whitespace beside the token, as the
         * reference's trimEnd / trimStart do. */
        size_t from = start, to = i;
        if (rstrip) from += trim_start(s + from, to - from);
        if (t->added[a].lstrip) to = from + trim_end(s + from, to - from);
        rc = encode_text(e, s + from, to - from, md);
        if (rc == 0) rc = push_ids(e, &t->added[a].id, 1);
        rstrip = t->added[a].rstrip;
        i += len;
        start = i;
    }
    if (rc == 0 && start < n) {
        size_t from = start;
        if (rstrip) from += trim_start(s + from, n - from);
        rc = encode_text(e, s + from, n - from, md);
    }
    pcre2_match_data_free(md);
    return rc;
}

static int
encode(const sg_tokenizer *t, const char *text, size_t len, int special,
    const size_t *spans, int n_spans, int32_t **ids, size_t *n_ids)
{
    enc e = { .t = t };
    int rc;

    *ids = NULL;
    *n_ids = 0;
    /* About one id per 3-4 bytes of text: reserve that up front. */
    if (reserve_ids(&e.ids, &e.cap, len / 3 + 16) != 0) return -1;
    rc = encode_all(&e, text, len, special, spans, n_spans);
    if (rc == 0 && e.ids == NULL) rc = reserve_ids(&e.ids, &e.cap, 1);
    tok_piece_cache_free(&e.cache);
    tok_bpe_scratch_free(&e.sc);
    if (rc != 0) {
        free(e.ids);
        return -1;
    }
    *ids = e.ids;
    *n_ids = e.n;
    return 0;
}

int
sg_tokenizer_encode(const sg_tokenizer *t, const char *text, size_t len,
    int special, int32_t **ids, size_t *n_ids)
{
    return encode(t, text, len, special, NULL, 0, ids, n_ids);
}

int
sg_tokenizer_encode_spans(const sg_tokenizer *t, const char *text,
    size_t len, const size_t *spans, int n_spans, int32_t **ids,
    size_t *n_ids)
{
    static const size_t none[2] = { 0, 0 };

    return encode(t, text, len, 1, n_spans > 0 ? spans : none, n_spans, ids,
                  n_ids);
}

int
sg_tokenizer_token(const sg_tokenizer *t, int32_t id, const char **bytes,
    size_t *len)
{
    if (id < 0 || id >= t->n_ids || !t->id_used[id]) return 0;
    *bytes = t->arena + t->id_bytes[id].off;
    *len = t->id_bytes[id].len;
    return t->id_used[id];
}

int
sg_tokenizer_vocab_size(const sg_tokenizer *t)
{
    return t->n_ids;
}

int32_t
sg_tokenizer_token_id(const sg_tokenizer *t, const char *token)
{
    size_t n = strlen(token), len = 0, k;
    int a = n ? match_added(t, token, n, &len) : -1;
    char *raw;
    int32_t id = -1;

    if (a >= 0 && len == n) return t->added[a].id;
    /* Otherwise a vocab entry, spelled as in tokenizer.json. */
    raw = malloc(n + 1);
    if (raw == NULL) return -1;
    if (n > 0 && tok_byte_level_decode(token, n, raw, &k) == 0) {
        id = tok_strmap_get(&t->vocab, t, raw, k);
    }
    free(raw);
    return id;
}

int32_t
sg_tokenizer_bos(const sg_tokenizer *t)
{
    return t->bos;
}

int32_t
sg_tokenizer_eos(const sg_tokenizer *t)
{
    return t->eos;
}

uint64_t
sg_tokenizer_hash(const sg_tokenizer *t)
{
    return t->hash;
}

size_t
sg_tokenizer_max_token_len(const sg_tokenizer *t)
{
    return t->max_token_len;
}
