/*
 * Loading a Hugging Face tokenizer.json (byte-level BPE): the vocab and
 * merges of "model", the Split regexes of "pre_tokenizer", "added_tokens",
 * and bos/eos from tokenizer_config.json beside it when there is one.
 * Anything the encoder would not reproduce exactly (a normalizer, byte
 * fallback, other split behaviours...) is refused with a message naming
 * the field, rather than silently giving different ids.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tok_internal.h"
#include "util/file.h"

/* The GPT-2 pre-tokenizer regex ByteLevel uses when use_regex is true
 * (as the JS reference writes it). */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+"
    "|\\s+(?!\\S)|\\s+";

typedef struct loader {
    sg_tokenizer *t;
    const char   *path;
    char         *err;
    int           errlen;
    uint16_t      cp_to_byte[324]; /* byte-level alphabet; 0xFFFF = none */
} loader;

static int
fail(loader *L, const char *fmt, ...)
{
    char msg[256];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(msg, sizeof(msg), fmt, ap);
    va_end(ap);
    if (L->err && L->errlen > 0) snprintf(L->err, L->errlen, "%s: %s",
                                          L->path, msg);
    return -1;
}

/* GPT-2's bytes_to_unicode: printable bytes stand for themselves, the
 * others are shifted to U+0100 and up, in byte order. */
static void
init_alphabet(loader *L)
{
    int extra = 0;

    for (int i = 0; i < 324; i++) L->cp_to_byte[i] = 0xFFFF;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= 33 && b <= 126) || (b >= 161 && b <= 172)
                        || (b >= 174);
        L->cp_to_byte[printable ? b : 256 + extra++] = (uint16_t)b;
    }
}

/* Byte-level string (UTF-8) -> raw bytes (out has room for n); -1 if a
 * character is outside the alphabet. */
static int
byte_level_decode(const loader *L, const char *s, size_t n, char *out,
    size_t *out_len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t i = 0, k = 0;

    while (i < n) {
        unsigned cp;
        if (u[i] < 0x80) {
            cp = u[i++];
        } else if ((u[i] & 0xE0) == 0xC0 && i + 1 < n) {
            cp = ((u[i] & 0x1Fu) << 6) | (u[i + 1] & 0x3Fu);
            i += 2;
        } else {
            return -1;
        }
        if (cp >= 324 || L->cp_to_byte[cp] == 0xFFFF) return -1;
        out[k++] = (char)L->cp_to_byte[cp];
    }
    *out_len = k;
    return 0;
}

static int
arena_add(sg_tokenizer *t, const char *s, size_t n, tok_str *out)
{
    if (t->arena_len + n > UINT32_MAX) return -1;
    if (t->arena_len + n > t->arena_cap) {
        size_t cap = t->arena_cap ? t->arena_cap * 2 : (1u << 20);
        while (cap < t->arena_len + n) cap *= 2;
        char *p = realloc(t->arena, cap);
        if (p == NULL) return -1;
        t->arena = p;
        t->arena_cap = cap;
    }
    memcpy(t->arena + t->arena_len, s, n);
    out->off = (uint32_t)t->arena_len;
    out->len = (uint32_t)n;
    t->arena_len += n;
    return 0;
}

static uint64_t
hash_mix(uint64_t h, const void *p, size_t n)
{
    return tok_hash_bytes(p, n, h * 0x100000001B3ull + n);
}

/* Largest id in the vocab and added tokens, to size the tables. */
static int
count_ids(loader *L, const cJSON *vocab, const cJSON *added)
{
    int64_t max_id = -1;
    const cJSON *e;

    cJSON_ArrayForEach(e, vocab) {
        if (!cJSON_IsNumber(e) || e->valuedouble < 0
            || e->valuedouble > 16777216
            || e->valuedouble != (int)e->valuedouble) {
            return fail(L, "model.vocab[\"%.40s\"]: id is not an integer in "
                        "[0, 2^24]", e->string);
        }
        if (e->valueint > max_id) max_id = e->valueint;
    }
    cJSON_ArrayForEach(e, added) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0
            || id->valuedouble > 16777216) {
            return fail(L, "added_tokens: an entry has no valid \"id\"");
        }
        if (id->valueint > max_id) max_id = id->valueint;
    }
    if (max_id < 0) return fail(L, "model.vocab is empty");
    L->t->n_ids = (int32_t)max_id + 1;
    return 0;
}

static int
load_vocab(loader *L, const cJSON *vocab)
{
    sg_tokenizer *t = L->t;
    const cJSON *e;
    char buf[1024];
    size_t n;

    t->id_bytes = calloc((size_t)t->n_ids, sizeof(tok_str));
    t->id_used = calloc((size_t)t->n_ids, 1);
    if (!t->id_bytes || !t->id_used
        || tok_strmap_init(&t->vocab, (size_t)cJSON_GetArraySize(vocab)) != 0) {
        return fail(L, "out of memory");
    }
    cJSON_ArrayForEach(e, vocab) {
        const char *key = e->string;
        size_t klen = strlen(key);
        int bl;

        if (klen >= sizeof(buf)) {
            return fail(L, "model.vocab: token \"%.40s...\" is too long", key);
        }
        /* Keys outside the byte-level alphabet (e.g. special tokens listed
         * in the vocab too) cannot come out of BPE: kept for decoding. */
        bl = byte_level_decode(L, key, klen, buf, &n) == 0;
        if (!bl) {
            memcpy(buf, key, klen);
            n = klen;
        }
        if (t->id_used[e->valueint]) {
            return fail(L, "model.vocab: id %d is used twice", e->valueint);
        }
        if (arena_add(t, buf, n, &t->id_bytes[e->valueint]) != 0) {
            return fail(L, "out of memory");
        }
        t->id_used[e->valueint] = 1;
        if (bl) tok_strmap_put(&t->vocab, t, e->valueint);
        if (n > t->max_token_len) t->max_token_len = n;
        t->hash = hash_mix(t->hash, key, klen + 1);
        t->hash = hash_mix(t->hash, &e->valueint, sizeof(int));
    }
    return 0;
}

static int
load_byte_ids(loader *L)
{
    sg_tokenizer *t = L->t;

    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = tok_strmap_get(&t->vocab, t, &c, 1);
        if (t->byte_id[b] < 0) {
            return fail(L, "model.vocab has no token for byte 0x%02X (not a "
                        "byte-level BPE vocabulary?)", b);
        }
    }
    return 0;
}

/* The id of a merge side, given as a byte-level string. */
static int32_t
merge_side(loader *L, const char *s, size_t n)
{
    char buf[1024];
    size_t k;

    if (n >= sizeof(buf) || byte_level_decode(L, s, n, buf, &k) != 0) return -1;
    return tok_strmap_get(&L->t->vocab, L->t, buf, k);
}

static int
load_merges(loader *L, const cJSON *merges)
{
    sg_tokenizer *t = L->t;
    int n = cJSON_GetArraySize(merges), rank = 0;
    const cJSON *e;

    /* The merge table packs ids and ranks into one word per slot. */
    if (t->n_ids >= (1 << TOK_ID_BITS) - 1) {
        return fail(L, "model.vocab: %d ids, at most %d supported", t->n_ids,
                    (1 << TOK_ID_BITS) - 2);
    }
    if (n >= (int)TOK_RANK_MASK) {
        return fail(L, "model.merges: %d merges, at most %d supported", n,
                    (int)TOK_RANK_MASK - 1);
    }
    if (tok_merges_init(t, (size_t)n) != 0) return fail(L, "out of memory");
    t->n_merges = n;

    cJSON_ArrayForEach(e, merges) {
        const char *a, *b;
        size_t na, nb;
        int32_t ia, ib, im;
        char cat[2048];

        /* "a b" (tokenizers < 0.20) or ["a", "b"]. */
        if (cJSON_IsString(e)) {
            const char *sp = strchr(e->valuestring, ' ');
            if (sp == NULL) {
                return fail(L, "model.merges[%d] \"%.40s\" has no space",
                            rank, e->valuestring);
            }
            a = e->valuestring;
            na = (size_t)(sp - a);
            b = sp + 1;
            nb = strcspn(b, " ");
        } else if (cJSON_IsArray(e) && cJSON_GetArraySize(e) == 2
                   && cJSON_IsString(cJSON_GetArrayItem(e, 0))
                   && cJSON_IsString(cJSON_GetArrayItem(e, 1))) {
            a = cJSON_GetArrayItem(e, 0)->valuestring;
            b = cJSON_GetArrayItem(e, 1)->valuestring;
            na = strlen(a);
            nb = strlen(b);
        } else {
            return fail(L, "model.merges[%d] is neither \"a b\" nor [a, b]",
                        rank);
        }
        ia = merge_side(L, a, na);
        ib = merge_side(L, b, nb);
        if (ia < 0 || ib < 0 || na + nb >= sizeof(cat)) {
            return fail(L, "model.merges[%d]: \"%.*s\" is not in the vocab",
                        rank, (int)(ia < 0 ? na : nb), ia < 0 ? a : b);
        }
        memcpy(cat, a, na);
        memcpy(cat + na, b, nb);
        im = merge_side(L, cat, na + nb);
        if (im < 0) {
            return fail(L, "model.merges[%d]: the merged token \"%.*s\" is "
                        "not in the vocab", rank, (int)(na + nb), cat);
        }
        tok_merge_put(t, ia, ib, rank, im);
        t->hash = hash_mix(t->hash, cat, na + nb);
        t->hash = hash_mix(t->hash, &na, sizeof(na));
        rank++;
    }
    return 0;
}

static int
flag(const cJSON *o, const char *name)
{
    return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, name));
}

static int
trie_insert(loader *L, const char *s, size_t n, int added_index)
{
    sg_tokenizer *t = L->t;
    uint32_t node = 0;

    for (size_t i = 0; i < n; i++) {
        uint32_t key = ((node << 8) | (unsigned char)s[i]) + 1;
        uint32_t h = (key * 2654435761u) & t->trie_mask;

        while (t->trie[h].key != 0 && t->trie[h].key != key) {
            h = (h + 1) & t->trie_mask;
        }
        if (t->trie[h].key == 0) {
            t->trie[h].key = key;
            t->trie[h].child = t->n_nodes++;
        }
        node = t->trie[h].child;
    }
    t->node_added[node] = added_index + 1;
    return 0;
}

static int
load_added(loader *L, const cJSON *added)
{
    sg_tokenizer *t = L->t;
    int n = cJSON_GetArraySize(added), i = 0;
    size_t total = 1, cap = 16;
    const cJSON *e;
    char buf[1024];

    cJSON_ArrayForEach(e, added) {
        const cJSON *c = cJSON_GetObjectItemCaseSensitive(e, "content");
        if (!cJSON_IsString(c) || c->valuestring[0] == '\0') {
            return fail(L, "added_tokens[%d]: \"content\" is missing or "
                        "empty", i);
        }
        total += strlen(c->valuestring);
        i++;
    }
    while (cap < total * 2) cap <<= 1;
    if (total >= (1u << 23)) return fail(L, "added_tokens: too many");
    t->trie = calloc(cap, sizeof(tok_trie_edge));
    t->node_added = calloc(total, sizeof(int32_t));
    t->added = calloc((size_t)n + 1, sizeof(tok_added));
    if (!t->trie || !t->node_added || !t->added) {
        return fail(L, "out of memory");
    }
    t->trie_mask = (uint32_t)(cap - 1);
    t->n_nodes = 1;

    i = 0;
    cJSON_ArrayForEach(e, added) {
        const char *c = cJSON_GetObjectItemCaseSensitive(e, "content")
                            ->valuestring;
        int id = cJSON_GetObjectItemCaseSensitive(e, "id")->valueint;
        size_t len = strlen(c), k;
        tok_added *a = &t->added[i];

        a->id = id;
        a->lstrip = (uint8_t)flag(e, "lstrip");
        a->rstrip = (uint8_t)flag(e, "rstrip");
        a->single_word = (uint8_t)flag(e, "single_word");
        a->special = (uint8_t)flag(e, "special");
        /* The added token's text wins over a vocab entry with its id. */
        if (arena_add(t, c, len, &t->id_bytes[id]) != 0) {
            return fail(L, "out of memory");
        }
        t->id_used[id] = 2;
        if (len > t->max_token_len) t->max_token_len = len;
        /* JS puts added tokens into the same token -> id map as the
         * vocab, so a BPE result spelling one gets the added id. */
        if (len < sizeof(buf) && byte_level_decode(L, c, len, buf, &k) == 0
            && k == len && memcmp(buf, c, len) == 0
            && tok_strmap_get(&t->vocab, t, buf, k) >= 0) {
            tok_strmap_put(&t->vocab, t, id);
        }
        trie_insert(L, c, len, i);
        t->first_byte[(unsigned char)c[0]] = 1;
        t->hash = hash_mix(t->hash, c, len + 1);
        t->hash = hash_mix(t->hash, a, sizeof(*a));
        i++;
    }
    t->n_added = n;
    return 0;
}

static int
add_split(loader *L, const char *regex, int kind, const char *where)
{
    sg_tokenizer *t = L->t;
    char err[200];
    tok_split *s, sp = { .kind = kind };

    for (int v = 0; v < 2; v++) {
        sp.re[v] = tok_compile_js_regex(regex, v, &sp.jit[v], err,
                                        sizeof(err));
        if (sp.re[v] == NULL) {
            pcre2_code_free(sp.re[0]);
            return fail(L, "%s: %s", where, err);
        }
    }
    s = realloc(t->splits, (size_t)(t->n_splits + 1) * sizeof(tok_split));
    if (s == NULL) {
        pcre2_code_free(sp.re[0]);
        pcre2_code_free(sp.re[1]);
        return fail(L, "out of memory");
    }
    t->splits = s;
    t->splits[t->n_splits++] = sp;
    t->hash = hash_mix(t->hash, regex, strlen(regex) + 1);
    t->hash = hash_mix(t->hash, &kind, sizeof(kind));
    return 0;
}

/* A String pattern: every ASCII punctuation escaped, the rest literal. */
static char *
escape_literal(const char *s)
{
    char *out = malloc(strlen(s) * 2 + 1), *o = out;

    if (out == NULL) return NULL;
    for (; *s; s++) {
        if ((unsigned char)*s < 0x80 && strchr("\\^$.|?*+()[]{}-/", *s)) {
            *o++ = '\\';
        }
        *o++ = *s;
    }
    *o = '\0';
    return out;
}

static int
load_pretok(loader *L, const cJSON *pt, const char *where, int *byte_level)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(pt, "type");
    char w[96];

    if (!cJSON_IsString(type)) return fail(L, "%s.type is missing", where);
    if (strcmp(type->valuestring, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pt,
                                                             "pretokenizers");
        const cJSON *e;
        int i = 0;
        if (!cJSON_IsArray(list)) {
            return fail(L, "%s.pretokenizers is not an array", where);
        }
        cJSON_ArrayForEach(e, list) {
            snprintf(w, sizeof(w), "%s.pretokenizers[%d]", where, i++);
            if (load_pretok(L, e, w, byte_level) != 0) return -1;
        }
        return 0;
    }
    if (strcmp(type->valuestring, "Split") == 0) {
        const cJSON *pat = cJSON_GetObjectItemCaseSensitive(pt, "pattern");
        const cJSON *re = cJSON_GetObjectItemCaseSensitive(pat, "Regex");
        const cJSON *str = cJSON_GetObjectItemCaseSensitive(pat, "String");
        const cJSON *beh = cJSON_GetObjectItemCaseSensitive(pt, "behavior");
        int kind, rc;
        char *lit;

        if (flag(pt, "invert")) {
            kind = TOK_SPLIT_MATCHES;
        } else if (cJSON_IsString(beh)
                   && strcmp(beh->valuestring, "Isolated") == 0) {
            kind = TOK_SPLIT_ISOLATED;
        } else if (cJSON_IsString(beh)
                   && strcmp(beh->valuestring, "Removed") == 0) {
            kind = TOK_SPLIT_REMOVED;
        } else {
            return fail(L, "%s.behavior \"%s\" is not supported (Isolated, "
                        "Removed)", where,
                        cJSON_IsString(beh) ? beh->valuestring : "?");
        }
        snprintf(w, sizeof(w), "%s.pattern", where);
        if (cJSON_IsString(re)) return add_split(L, re->valuestring, kind, w);
        if (!cJSON_IsString(str)) {
            return fail(L, "%s has neither Regex nor String", w);
        }
        lit = escape_literal(str->valuestring);
        if (lit == NULL) return fail(L, "out of memory");
        rc = add_split(L, lit, kind, w);
        free(lit);
        return rc;
    }
    if (strcmp(type->valuestring, "ByteLevel") == 0) {
        const cJSON *ur = cJSON_GetObjectItemCaseSensitive(pt, "use_regex");
        if (flag(pt, "add_prefix_space")) {
            return fail(L, "%s.add_prefix_space = true is not supported",
                        where);
        }
        *byte_level = 1;
        /* use_regex defaults to true. */
        if (ur == NULL || cJSON_IsTrue(ur)) {
            return add_split(L, gpt2_regex, TOK_SPLIT_MATCHES, where);
        }
        return 0;
    }
    return fail(L, "%s.type \"%s\" is not supported", where,
                type->valuestring);
}

static int
check_model(loader *L, const cJSON *model)
{
    const cJSON *type = cJSON_GetObjectItemCaseSensitive(model, "type");
    const cJSON *dropout = cJSON_GetObjectItemCaseSensitive(model, "dropout");
    const char *unset[] = { "continuing_subword_prefix", "end_of_word_suffix" };

    if (type != NULL && !(cJSON_IsString(type)
                          && strcmp(type->valuestring, "BPE") == 0)) {
        return fail(L, "model.type is not \"BPE\"");
    }
    if (flag(model, "byte_fallback")) {
        return fail(L, "model.byte_fallback = true is not supported");
    }
    if (cJSON_IsNumber(dropout) && dropout->valuedouble != 0.0) {
        return fail(L, "model.dropout is not supported");
    }
    for (int i = 0; i < 2; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(model, unset[i]);
        if (cJSON_IsString(v) && v->valuestring[0] != '\0') {
            return fail(L, "model.%s is not supported", unset[i]);
        }
    }
    L->t->ignore_merges = flag(model, "ignore_merges");
    return 0;
}

static int
check_normalizer(loader *L, const cJSON *root)
{
    const cJSON *n = cJSON_GetObjectItemCaseSensitive(root, "normalizer");
    const cJSON *type, *list;

    if (n == NULL || cJSON_IsNull(n)) return 0;
    type = cJSON_GetObjectItemCaseSensitive(n, "type");
    list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
    if (cJSON_IsString(type) && strcmp(type->valuestring, "Sequence") == 0
        && cJSON_GetArraySize(list) == 0) {
        return 0;
    }
    return fail(L, "normalizer \"%s\" is not supported (only none)",
                cJSON_IsString(type) ? type->valuestring : "?");
}

static int32_t
find_added(const sg_tokenizer *t, const char *content)
{
    for (int i = 0; i < t->n_added; i++) {
        tok_str s = t->id_bytes[t->added[i].id];
        if (s.len == strlen(content)
            && memcmp(t->arena + s.off, content, s.len) == 0) {
            return t->added[i].id;
        }
    }
    return -1;
}

/* bos/eos: tokenizer_config.json beside tokenizer.json when present,
 * otherwise the usual DeepSeek / Llama / GPT names. */
static void
load_bos_eos(sg_tokenizer *t, const char *path)
{
    static const char *bos_names[] = { "<｜begin▁of▁sentence｜>", "<s>",
                                       "<|begin_of_text|>" };
    static const char *eos_names[] = { "<｜end▁of▁sentence｜>", "</s>",
                                       "<|end_of_text|>", "<|endoftext|>" };
    char cfg[512];
    const char *slash = strrchr(path, '/');
    size_t dir = slash ? (size_t)(slash - path + 1) : 0, len;
    char *text;

    t->bos = t->eos = -1;
    if (dir + 32 < sizeof(cfg)) {
        memcpy(cfg, path, dir);
        strcpy(cfg + dir, "tokenizer_config.json");
        if ((text = sg_read_file(cfg, 0, &len)) != NULL) {
            cJSON *root = cJSON_ParseWithLength(text, len);
            const char *keys[2] = { "bos_token", "eos_token" };
            for (int k = 0; root && k < 2; k++) {
                const cJSON *v = cJSON_GetObjectItemCaseSensitive(root,
                                                                  keys[k]);
                if (cJSON_IsObject(v)) {
                    v = cJSON_GetObjectItemCaseSensitive(v, "content");
                }
                if (cJSON_IsString(v)) {
                    *(k ? &t->eos : &t->bos) = find_added(t, v->valuestring);
                }
            }
            cJSON_Delete(root);
            free(text);
        }
    }
    for (size_t i = 0; t->bos < 0 && i < 3; i++) {
        t->bos = find_added(t, bos_names[i]);
    }
    for (size_t i = 0; t->eos < 0 && i < 4; i++) {
        t->eos = find_added(t, eos_names[i]);
    }
}

static int
load_root(loader *L, const cJSON *root)
{
    const cJSON *model, *vocab, *merges, *added, *pt;
    int byte_level = 0;

    if (!cJSON_IsObject(root)) return fail(L, "top level is not an object");
    model = cJSON_GetObjectItemCaseSensitive(root, "model");
    if (!cJSON_IsObject(model)) return fail(L, "\"model\" is missing");
    vocab = cJSON_GetObjectItemCaseSensitive(model, "vocab");
    merges = cJSON_GetObjectItemCaseSensitive(model, "merges");
    added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    pt = cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer");
    if (!cJSON_IsObject(vocab)) {
        return fail(L, "\"model.vocab\" is missing or not an object");
    }
    if (!cJSON_IsArray(merges)) {
        return fail(L, "\"model.merges\" is missing or not an array");
    }
    if (added != NULL && !cJSON_IsArray(added) && !cJSON_IsNull(added)) {
        return fail(L, "\"added_tokens\" is not an array");
    }
    if (!cJSON_IsArray(added)) added = NULL;
    /* Added tokens before the merges: one spelled in the byte-level
     * alphabet takes over its vocab entry, merges included (as in JS). */
    if (check_model(L, model) || check_normalizer(L, root)
        || count_ids(L, vocab, added) || load_vocab(L, vocab)
        || load_added(L, added) || load_byte_ids(L)
        || load_merges(L, merges)) {
        return -1;
    }
    if (pt != NULL && !cJSON_IsNull(pt)
        && load_pretok(L, pt, "pre_tokenizer", &byte_level) != 0) {
        return -1;
    }
    if (!byte_level) {
        return fail(L, "pre_tokenizer has no ByteLevel step (only byte-level "
                    "BPE is supported)");
    }
    return 0;
}

int
sg_tokenizer_load(const char *path, sg_tokenizer **out, char *err, int errlen)
{
    loader L = { .path = path, .err = err, .errlen = errlen };
    sg_tokenizer *t;
    size_t len;
    char *text;
    cJSON *root;

    *out = NULL;
    if (err && errlen > 0) err[0] = '\0';
    init_alphabet(&L);
    text = sg_read_file(path, 0, &len);
    if (text == NULL) return fail(&L, "cannot read: %s", strerror(errno));
    root = cJSON_ParseWithLength(text, len);
    if (root == NULL) {
        const char *at = cJSON_GetErrorPtr();
        size_t off = at && at >= text && at <= text + len
                         ? (size_t)(at - text) : 0;
        free(text);
        return fail(&L, "malformed JSON near byte %zu", off);
    }
    free(text);
    t = calloc(1, sizeof(*t));
    if (t == NULL) {
        cJSON_Delete(root);
        return fail(&L, "out of memory");
    }
    L.t = t;
    snprintf(t->path, sizeof(t->path), "%s", path);
    t->mctx = tok_match_context();
    t->newer_cp = tok_newer_bitmap();
    if (t->mctx == NULL || t->newer_cp == NULL) {
        cJSON_Delete(root);
        sg_tokenizer_free(t);
        return fail(&L, "out of memory");
    }
    t->hash = 0xCBF29CE484222325ull;
    if (load_root(&L, root) != 0) {
        cJSON_Delete(root);
        sg_tokenizer_free(t);
        return -1;
    }
    cJSON_Delete(root);
    load_bos_eos(t, path);
    *out = t;
    return 0;
}

void
sg_tokenizer_free(sg_tokenizer *t)
{
    if (t == NULL) return;
    for (int i = 0; i < t->n_splits; i++) {
        pcre2_code_free(t->splits[i].re[0]);
        pcre2_code_free(t->splits[i].re[1]);
    }
    free(t->newer_cp);
    free(t->splits);
    pcre2_match_context_free(t->mctx);
    free(t->arena);
    free(t->id_bytes);
    free(t->id_used);
    free(t->vocab.slots);
    free(t->merges);
    free(t->merge_result);
    free(t->merge_bloom);
    free(t->trie);
    free(t->node_added);
    free(t->added);
    free(t);
}

int
tok_byte_level_decode(const char *s, size_t n, char *out, size_t *out_len)
{
    loader L;

    init_alphabet(&L);
    return byte_level_decode(&L, s, n, out, out_len);
}
