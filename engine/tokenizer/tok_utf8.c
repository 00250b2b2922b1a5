/*
 * UTF-8 validation with the WHATWG / Unicode "maximal subpart" rule: an
 * ill-formed sequence is cut where a decoder (TextDecoder, Node's Buffer)
 * would emit one U+FFFD, so the tokenizer sees the same characters as the
 * JavaScript reference does.
 */
#include <string.h>

#include "tok_internal.h"
#include "tokenizer.h"

/* Range of the byte after a lead byte (the later ones are 80..BF). */
int
tok_utf8_lead(unsigned char c, unsigned char *lo, unsigned char *hi)
{
    *lo = 0x80;
    *hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) return 1;
    if (c == 0xE0) { *lo = 0xA0; return 2; }
    if (c == 0xED) { *hi = 0x9F; return 2; }
    if (c >= 0xE1 && c <= 0xEF) return 2;
    if (c == 0xF0) { *lo = 0x90; return 3; }
    if (c == 0xF4) { *hi = 0x8F; return 3; }
    if (c >= 0xF1 && c <= 0xF3) return 3;
    return -1;
}

size_t
tok_utf8_char_len(const unsigned char *s, size_t n)
{
    unsigned char lo, hi;
    int need;

    if (s[0] < 0x80) return 1;
    need = tok_utf8_lead(s[0], &lo, &hi);
    if (need < 0 || (size_t)need >= n) return 0;
    if (s[1] < lo || s[1] > hi) return 0;
    for (int i = 2; i <= need; i++) {
        if (s[i] < 0x80 || s[i] > 0xBF) return 0;
    }
    return (size_t)need + 1;
}

size_t
tok_utf8_bad_len(const unsigned char *s, size_t n)
{
    unsigned char lo, hi;
    int need;
    size_t i;

    if (tok_utf8_char_len(s, n) != 0) return 0;
    need = tok_utf8_lead(s[0], &lo, &hi);
    if (need < 0) return 1;
    /* A valid lead: the subpart runs over the continuation bytes that
     * could still belong to it. */
    i = 1;
    if (i < n && s[i] >= lo && s[i] <= hi) {
        i++;
        while (i < n && i <= (size_t)need && s[i] >= 0x80 && s[i] <= 0xBF) i++;
    }
    return i;
}

size_t
tok_utf8_valid_prefix(const char *str, size_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t i = 0, k;

    while (i < n) {
        /* ASCII runs eight bytes at a time. */
        while (i + 8 <= n) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= n) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        k = tok_utf8_char_len(s + i, n - i);
        if (k == 0) break;
        i += k;
    }
    return i;
}

size_t
sg_utf8_valid_prefix(const char *s, size_t n)
{
    return tok_utf8_valid_prefix(s, n);
}
