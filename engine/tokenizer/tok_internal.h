/*
 * Internals of the tokenizer, shared by tokenizer.c and tok_*.c here.
 * Nothing here is part of the public API (tokenizer.h).
 *
 * Token bytes are kept raw (the byte-level alphabet of tokenizer.json is
 * undone at load), so BPE, lookups and decoding all work on plain bytes.
 */
#ifndef SG_TOK_INTERNAL_H
#define SG_TOK_INTERNAL_H

#include <stddef.h>
#include <stdint.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "tokenizer.h"

/* A byte string in the tokenizer's arena. */
typedef struct tok_str {
    uint32_t off;
    uint32_t len;
} tok_str;

/* Open-addressing map from byte strings (in the arena) to ids. */
typedef struct tok_strmap {
    uint32_t *slots;        /* id + 1, 0 = empty */
    uint32_t  mask;
} tok_strmap;

/*
 * The merge table: (left id, right id) -> rank, open addressing, one
 * 64-bit word per slot: the pair key (tok_pair_key) above the rank, 0 =
 * empty.  8 bytes a slot keeps DeepSeek's 128k merges in 2 MB (one huge
 * page where the kernel gives one); the merged id is merge_result[rank].
 * In front of it a blocked Bloom filter (two bits of one 64-bit word per
 * pair, 256 KB) answers most "no such merge" lookups from L2: text whose
 * pairs never repeat (random CJK) asks mostly about pairs that do not
 * merge, and each of those used to be a cache miss in the big table.
 */
#define TOK_ID_BITS   20        /* ids + 1 must fit: at most 2^20 - 2 ids */
#define TOK_RANK_BITS 24        /* at most 2^24 - 1 merges */
#define TOK_RANK_MASK ((1u << TOK_RANK_BITS) - 1)

static inline uint64_t
tok_pair_key(int32_t left, int32_t right)
{
    return ((uint64_t)(uint32_t)(left + 1) << TOK_ID_BITS)
           | (uint32_t)(right + 1);
}

/* How a Split pre-tokenizer treats what its regex matches. */
enum tok_split_kind {
    TOK_SPLIT_ISOLATED,     /* matches and gaps both become pieces */
    TOK_SPLIT_REMOVED,      /* gaps become pieces, matches are dropped */
    TOK_SPLIT_MATCHES       /* invert: only matches become pieces */
};

/* Each regex is compiled twice: as written, and with the characters newer
 * Unicode added to \p{L} etc. listed out (exact, but slower to run); the
 * second is used only for text that has such characters. */
typedef struct tok_split {
    pcre2_code *re[2];      /* [0] as written, [1] with newer Unicode */
    int         jit[2];     /* JIT-compiled: call pcre2_jit_match */
    int         kind;
} tok_split;

/* Added tokens are matched with a byte trie (longest match wins). */
typedef struct tok_trie_edge {
    uint32_t key;           /* node << 8 | byte, + 1; 0 = empty */
    uint32_t child;
} tok_trie_edge;

typedef struct tok_added {
    int32_t id;
    uint8_t lstrip, rstrip, single_word, special;
} tok_added;

struct sg_tokenizer {
    char        path[256];

    char       *arena;          /* all token bytes */
    size_t      arena_len, arena_cap;

    int32_t     n_ids;          /* max id + 1 */
    tok_str    *id_bytes;       /* id -> bytes (len 0 + off 0: unused id) */
    uint8_t    *id_used;        /* 1 vocab, 2 added token */
    size_t      max_token_len;

    tok_strmap  vocab;          /* BPE vocab bytes -> id */
    int32_t     byte_id[256];   /* the single-byte tokens */

    uint64_t   *merges;         /* see tok_pair_key */
    uint64_t    merge_mask;
    int32_t    *merge_result;   /* rank -> merged id */
    int32_t     n_merges;
    uint64_t   *merge_bloom;
    int         bloom_shift;    /* 64 - log2(words) */
    int         ignore_merges;

    tok_split  *splits;
    int         n_splits;
    /* Limits raised so that long runs (a megabyte of spaces) never fail
     * where JS would not; only read while matching, so shared. */
    pcre2_match_context *mctx;
    uint8_t    *newer_cp;       /* bitmap over code points (tok_extra_*) */

    /* Added tokens: trie over their contents; node 0 is the root. */
    tok_trie_edge *trie;
    uint32_t    trie_mask;
    uint32_t    n_nodes;
    int32_t    *node_added;     /* node -> index in added[] + 1, 0 = none */
    uint8_t     first_byte[256];
    tok_added  *added;
    int         n_added;

    int32_t     bos, eos;
    uint64_t    hash;
};

/* tok_util.c: hashing and the maps. */
uint64_t tok_hash_bytes(const void *p, size_t n, uint64_t seed);
int tok_strmap_init(tok_strmap *m, size_t n_keys);
void tok_strmap_put(tok_strmap *m, const sg_tokenizer *t, int32_t id);
int32_t tok_strmap_get(const tok_strmap *m, const sg_tokenizer *t,
    const char *s, size_t n);
/* Sizes the merge table and its filter for n merges; -1 out of memory. */
int tok_merges_init(sg_tokenizer *t, size_t n);
/* The rank of merging (left, right), -1 if they do not merge; the merged
 * id is t->merge_result[rank] (looked up only when a merge is made). */
int32_t tok_merge_rank(const sg_tokenizer *t, int32_t left, int32_t right);
void tok_merge_put(sg_tokenizer *t, int32_t left, int32_t right,
    int32_t rank, int32_t merged);

/* tok_load.c: a byte-level vocab string (as in tokenizer.json) -> raw
 * bytes; out has room for n.  -1 if outside the alphabet. */
int tok_byte_level_decode(const char *s, size_t n, char *out, size_t *out_len);

/* tok_pretok.c: JS-flavoured regex -> PCRE2, and the splitting. */
pcre2_code *tok_compile_js_regex(const char *pattern, int newer_unicode,
    int *jit, char *err, int errlen);
/* 1 if s[0, n) (valid UTF-8) has a character only newer Unicode has. */
int tok_has_newer_chars(const sg_tokenizer *t, const char *s, size_t n);
/* The bitmap of those characters (malloc'ed, NULL when out of memory). */
uint8_t *tok_newer_bitmap(void);

/* Calls fn for every final piece of s[0, n) (valid UTF-8 only).  Returns
 * 0, or -1 when fn fails or a regex cannot run. */
typedef int (*tok_piece_fn)(void *ctx, size_t off, size_t len);
int tok_pretokenize(const sg_tokenizer *t, const char *s, size_t n,
    int newer_unicode, pcre2_match_data *md, tok_piece_fn fn, void *ctx);
/* The shared match context (NULL when out of memory). */
pcre2_match_context *tok_match_context(void);

/* tok_bpe.c: BPE of one piece of raw bytes, appended to out[]; returns
 * the number of ids (<= n), or -1 when out of memory. */
#define TOK_PAIR_CACHE_BITS 13  /* 64 KB: stays in L2 */

typedef struct tok_bpe_scratch {
    int32_t  *sym;              /* symbol ids */
    int32_t  *next, *prev;
    uint64_t *heap;
    size_t    cap;
    /* A small direct-mapped cache in front of the merge table: the same
     * pairs come back all the time (the bytes of one script).  Entries
     * are merge-table words, rank TOK_RANK_MASK for "does not merge". */
    uint64_t *pairs;
} tok_bpe_scratch;

int tok_bpe(const sg_tokenizer *t, const char *s, size_t n,
    tok_bpe_scratch *sc, int32_t *out);
/* The textbook quadratic loop, kept as the reference the tests compare the
 * heap version with. */
int tok_bpe_simple(const sg_tokenizer *t, const char *s, size_t n,
    int32_t *out);
void tok_bpe_scratch_free(tok_bpe_scratch *sc);

/* tok_piece_cache.c: pieces already encoded in this call -> their ids. */
#define TOK_CACHE_MAX_PIECE 256 /* longer pieces are not cached */

typedef struct tok_piece_cache {
    uint64_t *slots;            /* hash tag << 32 | (entry + 1); 0 = empty */
    uint32_t  mask, used;
    int32_t  *arena;            /* the entries */
    size_t    n, cap;
} tok_piece_cache;

/* The ids of piece s[0, n) (*n_ids of them) or NULL; *hash is for _put. */
const int32_t *tok_piece_cache_get(const tok_piece_cache *c, const char *s,
    size_t n, uint64_t *hash, size_t *n_ids);
/* Remembers a piece (pieces over TOK_CACHE_MAX_PIECE are not kept);
 * -1 when out of memory. */
int tok_piece_cache_put(tok_piece_cache *c, const char *s, size_t n,
    uint64_t hash, const int32_t *ids, size_t n_ids);
void tok_piece_cache_free(tok_piece_cache *c);

/* tok_unicode_extra.c (generated): code points Node's \p{L,M,N,P,S} have
 * and this PCRE2's tables lack, as the body of a character class. */
extern const char tok_extra_L[], tok_extra_M[], tok_extra_N[],
    tok_extra_P[], tok_extra_S[];

/* tok_utf8.c */
/* Length of the valid UTF-8 prefix of s[0, n). */
size_t tok_utf8_valid_prefix(const char *s, size_t n);
/* Length of the ill-formed subsequence at s (WHATWG / Unicode "maximal
 * subpart"); 0 when s starts a valid character. */
size_t tok_utf8_bad_len(const unsigned char *s, size_t n);
/* A lead byte's continuation count (1..3) and the range of the byte after
 * it (the later ones are 80..BF); -1 when c never starts a character. */
int tok_utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi);
/* 1..4: length of the valid character at s, 0 if none (n > 0). */
size_t tok_utf8_char_len(const unsigned char *s, size_t n);

#endif
