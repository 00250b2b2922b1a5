/*
 * Shared by the chat files (chat_v32.c renders prompts, chat_parse.c
 * parses outputs): JSON written the way DeepSeek's encoding_dsv32.py writes
 * it (its to_json: Python's json.dumps(value, ensure_ascii=False)).
 */
#ifndef SG_CHAT_INTERNAL_H
#define SG_CHAT_INTERNAL_H

#include <stddef.h>

#include <cjson/cJSON.h>

#include "util/strbuf.h"

/* A string as json.dumps(s, ensure_ascii=False) writes it: quoted; '"',
 * '\\', \b \f \n \r \t escaped so, other bytes below 0x20 as \u00xx, the
 * rest as they are. */
void sg_pyjson_str(sg_strbuf *b, const char *s, size_t n);

/* Any value: separators ", " and ": ", keys in their order.  A number
 * with no fraction below 1e16 prints as an integer (the request's JSON is
 * parsed to doubles: "1.0" there prints as 1, where Python keeps 1.0);
 * others as Python's repr of a float (shortest round trip, an exponent
 * below 1e-4 and from 1e16). */
void sg_pyjson_value(sg_strbuf *b, const cJSON *v);

#endif
