/*
 * Chat messages, tools and the thinking switch into DeepSeek-V3.2's
 * encoding's messages.  Where the request puts tools and a response
 * schema (the top level), the encoding wants them on a system message:
 * the first message when it is one (as the encoding's own test puts them),
 * else an empty system message put first (as vLLM does).  Tool results are
 * matched to the calls by position in the encoding; they are put in the
 * order of the calls their tool_call_id names.
 */

#include "ngx_http_sparsegate_messages.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_params.h"



static ngx_int_t
ngx_http_sparsegate_bad(ngx_http_sparsegate_fault_t *f, const char *param,
    const char *fmt, ngx_uint_t i, const char *what)
{
    return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                                     NGX_HTTP_SG_ERR_BAD_REQUEST, param, fmt,
                                     i, what);
}


ngx_int_t
ngx_http_sparsegate_parse_thinking(cJSON *root, ngx_uint_t *out,
    ngx_http_sparsegate_fault_t *f)
{
    static const char *const  kw_fields[] = { "thinking", NULL };
    cJSON                    *t, *type, *kw, *it;
    ngx_int_t                 a = -1, b = -1;

    /* not asked for: off.  Always written: a caller's variable left as it
     * was held whatever its stack had (a /v1/rag answer after a failed
     * request once came back as reasoning_content) */
    *out = 0;

    t = cJSON_GetObjectItemCaseSensitive(root, "thinking");
    if (cJSON_IsBool(t)) {
        a = cJSON_IsTrue(t);
    } else if (cJSON_IsObject(t)) {
        type = cJSON_GetObjectItemCaseSensitive(t, "type");
        cJSON_ArrayForEach(it, t) {
            if (ngx_strcmp(it->string, "type") != 0) {
                return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                           NGX_HTTP_SG_ERR_BAD_REQUEST, "thinking",
                           "Unrecognized request argument supplied: "
                           "thinking.%s", it->string);
            }
        }
        if (!cJSON_IsString(type)
            || (ngx_strcmp(type->valuestring, "enabled") != 0
                && ngx_strcmp(type->valuestring, "disabled") != 0))
        {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "thinking",
                       "'thinking' must be true, false or {\"type\": "
                       "\"enabled\" | \"disabled\"}");
        }
        a = ngx_strcmp(type->valuestring, "enabled") == 0;
    } else if (t != NULL && !cJSON_IsNull(t)) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "thinking",
                   "'thinking' must be true, false or {\"type\": "
                   "\"enabled\" | \"disabled\"}");
    }

    kw = cJSON_GetObjectItemCaseSensitive(root, "chat_template_kwargs");
    if (kw != NULL && !cJSON_IsNull(kw)) {
        if (!cJSON_IsObject(kw)) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "chat_template_kwargs",
                       "'chat_template_kwargs' must be an object");
        }
        cJSON_ArrayForEach(it, kw) {
            if (ngx_strcmp(it->string, kw_fields[0]) != 0) {
                return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                           NGX_HTTP_SG_ERR_BAD_REQUEST,
                           "chat_template_kwargs",
                           "Unrecognized request argument supplied: "
                           "chat_template_kwargs.%s (DeepSeek-V3.2's "
                           "encoding takes \"thinking\" only)", it->string);
            }
        }
        it = cJSON_GetObjectItemCaseSensitive(kw, "thinking");
        if (it != NULL && !cJSON_IsBool(it)) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "chat_template_kwargs",
                       "chat_template_kwargs.thinking must be true or "
                       "false");
        }
        if (it != NULL) {
            b = cJSON_IsTrue(it);
        }
    }

    if (a >= 0 && b >= 0 && a != b) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "thinking",
                   "'thinking' and chat_template_kwargs.thinking disagree");
    }
    if (a >= 0 || b >= 0) {
        *out = (ngx_uint_t) (a >= 0 ? a : b);
    }
    return NGX_OK;
}


/* Message content: a string, or an array of {"type": "text", "text": ...}
 * (joined in pool memory); NULL content is NULL. */
static ngx_int_t
ngx_http_sparsegate_content(ngx_http_request_t *r, cJSON *content,
    ngx_uint_t i, const char **out, ngx_http_sparsegate_fault_t *f)
{
    static const char *const  part_fields[] = { "type", "text", NULL };
    u_char                   *s, *p;
    size_t                    len;
    cJSON                    *part, *text, *type;

    *out = NULL;
    if (content == NULL || cJSON_IsNull(content)) {
        return NGX_OK;
    }
    if (cJSON_IsString(content)) {
        *out = content->valuestring;
        return NGX_OK;
    }
    if (!cJSON_IsArray(content)) {
        return ngx_http_sparsegate_bad(f, "messages", "messages[%ui].content "
                                       "must be a string or an array of "
                                       "text parts%s", i, "");
    }

    len = 0;
    cJSON_ArrayForEach(part, content) {
        type = cJSON_GetObjectItemCaseSensitive(part, "type");
        text = cJSON_GetObjectItemCaseSensitive(part, "text");
        if (!cJSON_IsObject(part) || !cJSON_IsString(type)
            || ngx_strcmp(type->valuestring, "text") != 0
            || !cJSON_IsString(text))
        {
            return ngx_http_sparsegate_bad(f, "messages",
                       "messages[%ui].content: only text parts ({\"type\": "
                       "\"text\", \"text\": ...}) are supported%s", i,
                       "");
        }
        if (ngx_http_sparsegate_check_fields(r, part, part_fields,
                                             "messages[].content[].", f)
            != NGX_OK)
        {
            return NGX_ERROR;
        }
        len += ngx_strlen(text->valuestring);
    }
    s = ngx_pnalloc(r->pool, len + 1);
    if (s == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    p = s;
    cJSON_ArrayForEach(part, content) {
        text = cJSON_GetObjectItemCaseSensitive(part, "text");
        p = ngx_cpymem(p, text->valuestring, ngx_strlen(text->valuestring));
    }
    *p = '\0';
    *out = (char *) s;
    return NGX_OK;
}


/* An assistant's tool_calls: [{id, type: "function", function: {name,
 * arguments}}]; ids kept for matching the results. */
static ngx_int_t
ngx_http_sparsegate_parse_calls(ngx_http_request_t *r, cJSON *calls,
    ngx_uint_t i, sg_chat_message *m, const char ***ids,
    ngx_http_sparsegate_fault_t *f)
{
    static const char *const  call_fields[] = { "id", "type", "function",
                                                "index", NULL };
    static const char *const  fn_fields[] = { "name", "arguments", NULL };
    cJSON                    *c, *id, *type, *fn, *name, *args;
    ngx_uint_t                k, n;
    sg_chat_call             *out;

    n = cJSON_GetArraySize(calls);
    if (!cJSON_IsArray(calls)) {
        return ngx_http_sparsegate_bad(f, "messages", "messages[%ui]."
                                       "tool_calls must be an array%s", i,
                                       "");
    }
    out = ngx_pcalloc(r->pool, (n + 1) * sizeof(sg_chat_call));
    *ids = ngx_pcalloc(r->pool, (n + 1) * sizeof(char *));
    if (out == NULL || *ids == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    k = 0;
    cJSON_ArrayForEach(c, calls) {
        id = cJSON_GetObjectItemCaseSensitive(c, "id");
        type = cJSON_GetObjectItemCaseSensitive(c, "type");
        fn = cJSON_GetObjectItemCaseSensitive(c, "function");
        name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        args = cJSON_GetObjectItemCaseSensitive(fn, "arguments");
        if (ngx_http_sparsegate_check_fields(r, c, call_fields,
                                             "messages[].tool_calls[].", f)
            != NGX_OK
            || ngx_http_sparsegate_check_fields(r, fn, fn_fields,
                         "messages[].tool_calls[].function.", f) != NGX_OK)
        {
            return NGX_ERROR;
        }
        if (!cJSON_IsString(id) || !cJSON_IsString(name)
            || !cJSON_IsString(args)
            || (type != NULL && (!cJSON_IsString(type)
                                 || ngx_strcmp(type->valuestring, "function")
                                    != 0)))
        {
            return ngx_http_sparsegate_bad(f, "messages",
                       "messages[%ui].tool_calls: each needs an \"id\", "
                       "\"type\": \"function\" and a function's \"name\" "
                       "and \"arguments\" (a JSON string)%s", i, "");
        }
        out[k].name = name->valuestring;
        out[k].arguments = args->valuestring;
        (*ids)[k] = id->valuestring;
        k++;
    }
    m->calls = out;
    m->n_calls = (int) k;
    return NGX_OK;
}


/* The tool messages right after an assistant's calls, in its calls'
 * order (by tool_call_id). */
static ngx_int_t
ngx_http_sparsegate_order_results(sg_chat_message *msgs,
    const char **result_ids, ngx_uint_t a, const char **call_ids,
    ngx_uint_t n, ngx_http_sparsegate_fault_t *f)
{
    ngx_uint_t       k, j, c, count;
    sg_chat_message  tmp;
    const char      *tid;

    count = 0;
    while (a + 1 + count < n
           && ngx_strcmp(msgs[a + 1 + count].role, "tool") == 0)
    {
        count++;
    }
    for (k = 0; k < count; k++) {
        /* place the result for call k at a + 1 + k */
        for (j = k; j < count; j++) {
            if (ngx_strcmp(result_ids[a + 1 + j], call_ids[k]) == 0) {
                break;
            }
        }
        if (j == count) {
            for (c = 0; c < (ngx_uint_t) msgs[a].n_calls; c++) {
                if (ngx_strcmp(result_ids[a + 1 + k], call_ids[c]) == 0) {
                    break;
                }
            }
            return ngx_http_sparsegate_bad(f, "messages",
                       "messages[%ui]: tool_call_id \"%s\" answers none of "
                       "the calls before it, or one twice", a + 1 + k,
                       result_ids[a + 1 + k]);
        }
        if (j != k) {
            tmp = msgs[a + 1 + k];
            msgs[a + 1 + k] = msgs[a + 1 + j];
            msgs[a + 1 + j] = tmp;
            tid = result_ids[a + 1 + k];
            result_ids[a + 1 + k] = result_ids[a + 1 + j];
            result_ids[a + 1 + j] = tid;
        }
    }
    return NGX_OK;
}


static ngx_int_t
ngx_http_sparsegate_parse_messages(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_chat_t *chat, ngx_uint_t room,
    ngx_http_sparsegate_fault_t *f)
{
    static const char *const  system_fields[] = { "role", "content", NULL };
    static const char *const  assistant_fields[] = { "role", "content",
                                                     "reasoning_content",
                                                     "tool_calls", NULL };
    static const char *const  tool_fields[] = { "role", "content",
                                                "tool_call_id", NULL };
    int                       n;
    cJSON                    *messages, *m, *role, *it;
    ngx_uint_t                i, a;
    const char               *name, ***call_ids, **result_ids;
    sg_chat_message          *msgs;

    messages = cJSON_GetObjectItemCaseSensitive(root, "messages");
    n = cJSON_GetArraySize(messages);
    if (!cJSON_IsArray(messages) || n == 0) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "messages",
                   "'messages' must be a non-empty array");
    }

    /* room: one more at the front for tools or a response schema */
    msgs = ngx_pcalloc(r->pool, (n + room) * sizeof(sg_chat_message));
    call_ids = ngx_pcalloc(r->pool, (n + 1) * sizeof(char **));
    result_ids = ngx_pcalloc(r->pool, (n + 1) * sizeof(char *));
    if (msgs == NULL || call_ids == NULL || result_ids == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    msgs += room;

    i = 0;
    cJSON_ArrayForEach(m, messages) {
        role = cJSON_GetObjectItemCaseSensitive(m, "role");
        name = cJSON_IsString(role) ? role->valuestring : "";
        if (!cJSON_IsObject(m)
            || (ngx_strcmp(name, "system") != 0
                && ngx_strcmp(name, "developer") != 0
                && ngx_strcmp(name, "user") != 0
                && ngx_strcmp(name, "assistant") != 0
                && ngx_strcmp(name, "tool") != 0))
        {
            return ngx_http_sparsegate_bad(f, "messages",
                       "messages[%ui].role must be \"system\", "
                       "\"developer\", \"user\", \"assistant\" or "
                       "\"tool\"%s", i, "");
        }
        msgs[i].role = name;

        if (ngx_http_sparsegate_check_fields(r, m,
                name[0] == 'a' ? assistant_fields
                : name[0] == 't' ? tool_fields : system_fields,
                "messages[].", f)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (ngx_http_sparsegate_content(r,
                cJSON_GetObjectItemCaseSensitive(m, "content"), i,
                &msgs[i].content, f)
            != NGX_OK)
        {
            return NGX_ERROR;
        }

        if (name[0] == 'a') {
            it = cJSON_GetObjectItemCaseSensitive(m, "reasoning_content");
            if (it != NULL && !cJSON_IsNull(it) && !cJSON_IsString(it)) {
                return ngx_http_sparsegate_bad(f, "messages",
                           "messages[%ui].reasoning_content must be a "
                           "string%s", i, "");
            }
            msgs[i].reasoning = cJSON_IsString(it) ? it->valuestring : NULL;
            it = cJSON_GetObjectItemCaseSensitive(m, "tool_calls");
            if (it != NULL && !cJSON_IsNull(it)
                && ngx_http_sparsegate_parse_calls(r, it, i, &msgs[i],
                                                   &call_ids[i], f)
                   != NGX_OK)
            {
                return NGX_ERROR;
            }
        }

        if (name[0] == 't') {
            it = cJSON_GetObjectItemCaseSensitive(m, "tool_call_id");
            if (!cJSON_IsString(it)) {
                return ngx_http_sparsegate_bad(f, "messages",
                           "messages[%ui] (a tool result) needs a "
                           "\"tool_call_id\"%s", i, "");
            }
            result_ids[i] = it->valuestring;
        }

        if ((name[0] == 'u' || name[0] == 't' || name[0] == 'd')
            && msgs[i].content == NULL)
        {
            return ngx_http_sparsegate_bad(f, "messages",
                       "messages[%ui].content is required for this role%s",
                       i, "");
        }
        i++;
    }

    for (a = 0; a < i; a++) {
        if (msgs[a].n_calls > 0
            && ngx_http_sparsegate_order_results(msgs, result_ids, a,
                                                 call_ids[a], i, f)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
    }

    chat->msgs = msgs;
    chat->n = i;
    return NGX_OK;
}


/* "tools": [{"type": "function", "function": {name, description,
 * parameters, strict}}], kept as JSON text. */
static ngx_int_t
ngx_http_sparsegate_parse_tools(ngx_http_request_t *r, cJSON *root,
    ngx_http_sparsegate_chat_t *chat, ngx_http_sparsegate_fault_t *f)
{
    static const char *const  tool_fields[] = { "type", "function", NULL };
    static const char *const  fn_fields[] = { "name", "description",
                                              "parameters", "strict", NULL };
    char                     *text;
    size_t                    len;
    cJSON                    *tools, *t, *type, *fn, *name, *choice, *cn;
    ngx_uint_t                i, flag;

    tools = cJSON_GetObjectItemCaseSensitive(root, "tools");
    choice = cJSON_GetObjectItemCaseSensitive(root, "tool_choice");
    if (tools == NULL || cJSON_IsNull(tools)) {
        if (choice != NULL && !cJSON_IsNull(choice)) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "tool_choice",
                       "'tool_choice' is only allowed when 'tools' are "
                       "specified");
        }
        return NGX_OK;
    }
    if (!cJSON_IsArray(tools) || cJSON_GetArraySize(tools) == 0
        || cJSON_GetArraySize(tools) > 128)
    {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "tools",
                   "'tools' must be an array of 1 to 128 tools");
    }
    i = 0;
    cJSON_ArrayForEach(t, tools) {
        type = cJSON_GetObjectItemCaseSensitive(t, "type");
        fn = cJSON_GetObjectItemCaseSensitive(t, "function");
        name = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsString(type)
            || ngx_strcmp(type->valuestring, "function") != 0
            || !cJSON_IsObject(fn) || !cJSON_IsString(name))
        {
            return ngx_http_sparsegate_bad(f, "tools", "tools[%ui] must be "
                       "{\"type\": \"function\", \"function\": {\"name\": "
                       "...}}%s", i, "");
        }
        if (ngx_http_sparsegate_check_fields(r, t, tool_fields, "tools[].",
                                             f) != NGX_OK
            || ngx_http_sparsegate_check_fields(r, fn, fn_fields,
                                                "tools[].function.", f)
               != NGX_OK)
        {
            return NGX_ERROR;
        }
        i++;
    }

    text = cJSON_PrintUnformatted(tools);
    if (text == NULL) {
        return ngx_http_sparsegate_fault_oom(f);
    }
    len = ngx_strlen(text);
    chat->tools = ngx_pnalloc(r->pool, len + 1);
    if (chat->tools == NULL) {
        free(text);
        return ngx_http_sparsegate_fault_oom(f);
    }
    ngx_memcpy(chat->tools, text, len + 1);
    free(text);

    chat->tool_choice = NGX_HTTP_SG_TOOLS_AUTO;
    if (cJSON_IsString(choice)) {
        if (ngx_strcmp(choice->valuestring, "none") == 0) {
            chat->tool_choice = NGX_HTTP_SG_TOOLS_NONE;
        } else if (ngx_strcmp(choice->valuestring, "required") == 0) {
            chat->tool_choice = NGX_HTTP_SG_TOOLS_REQUIRED;
        } else if (ngx_strcmp(choice->valuestring, "auto") != 0) {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "tool_choice",
                       "'tool_choice' must be \"none\", \"auto\", "
                       "\"required\" or {\"type\": \"function\", "
                       "\"function\": {\"name\": ...}}");
        }
    } else if (cJSON_IsObject(choice)) {
        type = cJSON_GetObjectItemCaseSensitive(choice, "type");
        fn = cJSON_GetObjectItemCaseSensitive(choice, "function");
        cn = cJSON_GetObjectItemCaseSensitive(fn, "name");
        if (!cJSON_IsString(type)
            || ngx_strcmp(type->valuestring, "function") != 0
            || !cJSON_IsString(cn)
            || cJSON_GetArraySize(choice) != 2
            || cJSON_GetArraySize(fn) != 1)
        {
            return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                       NGX_HTTP_SG_ERR_BAD_REQUEST, "tool_choice",
                       "a named 'tool_choice' is {\"type\": \"function\", "
                       "\"function\": {\"name\": ...}}");
        }
        chat->tool_choice = NGX_HTTP_SG_TOOLS_REQUIRED;
        chat->tool_name = cn->valuestring;
    } else if (choice != NULL && !cJSON_IsNull(choice)) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "tool_choice",
                   "'tool_choice' must be a string or an object");
    }

    flag = 1;
    if (ngx_http_sparsegate_parse_bool(root, "parallel_tool_calls", &flag, f)
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    chat->parallel = flag;
    if (!flag && chat->tool_choice == NGX_HTTP_SG_TOOLS_AUTO) {
        return ngx_http_sparsegate_fault(f, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "parallel_tool_calls",
                   "'parallel_tool_calls': false is enforced with "
                   "tool_choice \"required\" or a named function only");
    }
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_parse_chat(ngx_http_request_t *r, cJSON *root,
    const char *schema, ngx_http_sparsegate_chat_t *chat,
    ngx_http_sparsegate_fault_t *f)
{
    sg_chat_message  *first;

    ngx_memzero(chat, sizeof(ngx_http_sparsegate_chat_t));
    chat->parallel = 1;

    if (ngx_http_sparsegate_parse_thinking(root, &chat->thinking, f)
        != NGX_OK
        || ngx_http_sparsegate_parse_tools(r, root, chat, f) != NGX_OK
        || ngx_http_sparsegate_parse_messages(r, root, chat, 1, f) != NGX_OK)
    {
        return NGX_ERROR;
    }

    if (chat->tools == NULL && schema == NULL) {
        return NGX_OK;
    }
    first = &chat->msgs[0];
    if (ngx_strcmp(first->role, "system") != 0) {
        /* the room left before the first message */
        first = --chat->msgs;
        chat->n++;
        ngx_memzero(first, sizeof(sg_chat_message));
        first->role = "system";
    }
    first->tools = chat->tools;
    first->response_format = schema;
    return NGX_OK;
}
