/*
 * Python's json.dumps(value, ensure_ascii=False), the to_json of DeepSeek's
 * encoding_dsv32.py: tool schemas in the system prompt and the non-string
 * arguments of past tool calls are written this way, so our prompts hold
 * the same bytes as the published encoding's.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "chat_internal.h"

void
sg_pyjson_str(sg_strbuf *b, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    size_t from = 0;

    sg_strbuf_add(b, "\"", 1);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[7];

        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        switch (c) {
        case '"':  esc = "\\\""; break;
        case '\\': esc = "\\\\"; break;
        case '\b': esc = "\\b"; break;
        case '\f': esc = "\\f"; break;
        case '\n': esc = "\\n"; break;
        case '\r': esc = "\\r"; break;
        case '\t': esc = "\\t"; break;
        default:
            memcpy(u, "\\u00", 4);
            u[4] = hex[c >> 4];
            u[5] = hex[c & 15];
            u[6] = '\0';
            esc = u;
        }
        sg_strbuf_add(b, s + from, i - from);
        sg_strbuf_str(b, esc);
        from = i + 1;
    }
    sg_strbuf_add(b, s + from, n - from);
    sg_strbuf_add(b, "\"", 1);
}

/* repr(float) for a double with a fraction: the fewest significant digits
 * that read back the same, fixed notation unless the decimal point would
 * sit 4 or more places left of the first digit (1e-05, but 0.0001). */
static void
py_float(sg_strbuf *b, double x)
{
    char   e[40], digits[24], out[64];
    int    prec, exp10, nd = 0, k = 0;
    char  *p;

    for (prec = 1; prec <= 17; prec++) {
        snprintf(e, sizeof(e), "%.*e", prec - 1, x);
        if (strtod(e, NULL) == x)
            break;
    }
    p = e;
    if (*p == '-')
        out[k++] = *p++;
    for (; *p && *p != 'e'; p++) {
        if (*p != '.')
            digits[nd++] = *p;
    }
    while (nd > 1 && digits[nd - 1] == '0')
        nd--;
    digits[nd] = '\0';
    exp10 = atoi(p + 1);

    if (exp10 + 1 <= -4 || exp10 + 1 > 16) {
        out[k++] = digits[0];
        if (nd > 1) {
            out[k++] = '.';
            memcpy(out + k, digits + 1, nd - 1);
            k += nd - 1;
        }
        k += snprintf(out + k, sizeof(out) - k, "e%c%02d",
                      exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        out[k++] = '0';
        out[k++] = '.';
        for (int i = 0; i < -exp10 - 1; i++)
            out[k++] = '0';
        memcpy(out + k, digits, nd);
        k += nd;
    } else {
        for (int i = 0; i <= exp10; i++)
            out[k++] = i < nd ? digits[i] : '0';
        out[k++] = '.';
        if (nd > exp10 + 1) {
            memcpy(out + k, digits + exp10 + 1, nd - exp10 - 1);
            k += nd - exp10 - 1;
        } else {
            out[k++] = '0';
        }
    }
    sg_strbuf_add(b, out, k);
}

void
sg_pyjson_value(sg_strbuf *b, const cJSON *v)
{
    const cJSON *c;
    char         num[40];
    int          first = 1;

    if (cJSON_IsNull(v)) {
        sg_strbuf_str(b, "null");
    } else if (cJSON_IsTrue(v)) {
        sg_strbuf_str(b, "true");
    } else if (cJSON_IsFalse(v)) {
        sg_strbuf_str(b, "false");
    } else if (cJSON_IsNumber(v)) {
        double x = v->valuedouble;
        if (!isfinite(x)) {
            sg_strbuf_str(b, x != x ? "NaN" : x > 0 ? "Infinity"
                                                    : "-Infinity");
        } else if (x == floor(x) && fabs(x) < 1e16) {
            snprintf(num, sizeof(num), "%lld", (long long)x);
            sg_strbuf_str(b, num);
        } else {
            py_float(b, x);
        }
    } else if (cJSON_IsString(v)) {
        sg_pyjson_str(b, v->valuestring, strlen(v->valuestring));
    } else if (cJSON_IsArray(v)) {
        sg_strbuf_add(b, "[", 1);
        cJSON_ArrayForEach(c, v) {
            if (!first)
                sg_strbuf_add(b, ", ", 2);
            sg_pyjson_value(b, c);
            first = 0;
        }
        sg_strbuf_add(b, "]", 1);
    } else if (cJSON_IsObject(v)) {
        sg_strbuf_add(b, "{", 1);
        cJSON_ArrayForEach(c, v) {
            if (!first)
                sg_strbuf_add(b, ", ", 2);
            sg_pyjson_str(b, c->string, strlen(c->string));
            sg_strbuf_add(b, ": ", 2);
            sg_pyjson_value(b, c);
            first = 0;
        }
        sg_strbuf_add(b, "}", 1);
    }
}
