/*
 * A chat request's conversation for DeepSeek-V3.2's encoding: "messages"
 * (system, developer, user, assistant with reasoning_content and
 * tool_calls, tool with tool_call_id), "tools", "tool_choice",
 * "parallel_tool_calls" and the thinking switch ("thinking": true/false or
 * {"type": "enabled"|"disabled"} as DeepSeek's API, or
 * "chat_template_kwargs": {"thinking": bool} as vLLM and SGLang), into the
 * tokenizer library's sg_chat_message list.  Every field of every message
 * is known or refused.
 */
#ifndef NGX_HTTP_SPARSEGATE_MESSAGES_H
#define NGX_HTTP_SPARSEGATE_MESSAGES_H

#include <ngx_config.h>
#include <ngx_core.h>
#include <ngx_http.h>

#include <cjson/cJSON.h>

#include "ngx_http_sparsegate_errors.h"
#include "tokenizer.h"


typedef enum {
    NGX_HTTP_SG_TOOLS_NONE = 0,     /* no tools, or tool_choice "none" */
    NGX_HTTP_SG_TOOLS_AUTO,         /* the model may call */
    NGX_HTTP_SG_TOOLS_REQUIRED,     /* it must call one (or the named) */
} ngx_http_sparsegate_tool_choice_e;


typedef struct {
    sg_chat_message                    *msgs;     /* pool memory */
    ngx_uint_t                          n;
    ngx_uint_t                          thinking;
    char                               *tools;    /* the tools' JSON text
                                                     (pool), or NULL */
    ngx_http_sparsegate_tool_choice_e   tool_choice;
    const char                         *tool_name;    /* a named choice */
    ngx_uint_t                          parallel;     /* parallel_tool_calls */
} ngx_http_sparsegate_chat_t;


/* The thinking switch alone (rag has it too): *out is 0 when absent. */
ngx_int_t ngx_http_sparsegate_parse_thinking(cJSON *root, ngx_uint_t *out,
    ngx_http_sparsegate_fault_t *f);

/* The conversation; schema (a json_schema response format's schema, JSON
 * text, or NULL) goes into the system part as the encoding's "Response
 * Format".  Strings point into root or the pool.  NGX_OK, or NGX_ERROR
 * and f. */
ngx_int_t ngx_http_sparsegate_parse_chat(ngx_http_request_t *r, cJSON *root,
    const char *schema, ngx_http_sparsegate_chat_t *chat,
    ngx_http_sparsegate_fault_t *f);

#endif /* NGX_HTTP_SPARSEGATE_MESSAGES_H */
