/*
 * A choice: tokens -> text (stop strings held back) -> reasoning, content
 * and calls; logprobs.  Memory is malloc'ed: the choice belongs to a job,
 * which may outlive its request.
 */

#include "ngx_http_sparsegate_choice.h"


static ngx_int_t
ngx_http_sparsegate_buf_add(ngx_http_sparsegate_buf_t *b, const void *s,
    size_t n)
{
    return ngx_http_sparsegate_text_grow(&b->data, &b->len, &b->cap, s, n);
}


/* Grows an array of items to hold one more. */
static ngx_int_t
ngx_http_sparsegate_grow(void **arr, ngx_uint_t *cap, ngx_uint_t n,
    size_t size)
{
    void        *p;
    ngx_uint_t   c;

    if (n < *cap) {
        return NGX_OK;
    }
    c = *cap ? 2 * *cap : 16;
    p = realloc(*arr, c * size);
    if (p == NULL) {
        return NGX_ERROR;
    }
    *arr = p;
    *cap = c;
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_choice_init(ngx_http_sparsegate_choice_t *ch,
    ngx_uint_t index, const ngx_http_sparsegate_choice_opts_t *o)
{
    ngx_memzero(ch, sizeof(ngx_http_sparsegate_choice_t));
    ch->index = index;
    ch->eos = sg_tokenizer_eos(o->tokenizer);
    ch->want_logprobs = o->logprobs ? 1 : 0;
    ch->format_text = o->format == NGX_HTTP_SG_FMT_COMPLETION;
    ch->call_prefix = o->call_prefix;

    if (ngx_http_sparsegate_text_init(&ch->text, o->tokenizer, o->stops,
                                      o->n_stops)
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (!ch->format_text && (o->thinking || o->tools)) {
        ch->parser = sg_chat_parser_new((int) o->thinking, (int) o->tools);
        if (ch->parser == NULL) {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


void
ngx_http_sparsegate_choice_free(ngx_http_sparsegate_choice_t *ch)
{
    ngx_uint_t  i;

    ngx_http_sparsegate_text_free(&ch->text);
    sg_chat_parser_free(ch->parser);
    free(ch->reasoning.data);
    free(ch->content.data);
    for (i = 0; i < ch->n_calls; i++) {
        free(ch->calls[i].id.data);
        free(ch->calls[i].name.data);
        free(ch->calls[i].arguments.data);
    }
    free(ch->calls);
    free(ch->logprobs);
    free(ch->lp_text.data);
    free(ch->token_end);
    ch->parser = NULL;
}


/* A token's text for logprobs: its bytes, with U+FFFD for those that are
 * no whole UTF-8 character; both kept in lp_text (as offsets until the
 * strings are handed out: the buffer moves as it grows). */
static ngx_int_t
ngx_http_sparsegate_lp_token(ngx_http_sparsegate_choice_t *ch, int32_t id,
    float logprob, ngx_http_sparsegate_lp_token_t *t)
{
    size_t       len, n, start;
    u_char      *valid;
    const char  *s;
    ngx_int_t    rc;

    if (sg_tokenizer_token(ch->text.detok.t, id, &s, &len) == 0) {
        s = "";
        len = 0;
    }
    t->logprob = logprob;
    t->bytes.data = (u_char *) (uintptr_t) ch->lp_text.len;
    t->bytes.len = len;
    if (ngx_http_sparsegate_buf_add(&ch->lp_text, s, len) != NGX_OK) {
        return NGX_ERROR;
    }
    valid = ngx_http_sparsegate_text_sanitize((u_char *) s, len, &n);
    if (valid == NULL) {
        return NGX_ERROR;
    }
    start = ch->lp_text.len;
    rc = ngx_http_sparsegate_buf_add(&ch->lp_text, valid, n);
    free(valid);
    t->text.data = (u_char *) (uintptr_t) start;
    t->text.len = n;
    return rc;
}


static ngx_int_t
ngx_http_sparsegate_choice_logprob(ngx_http_sparsegate_choice_t *ch,
    int32_t token, const ngx_http_sparsegate_token_lp_t *lp)
{
    ngx_uint_t                      k;
    ngx_http_sparsegate_logprob_t  *l;

    if (ngx_http_sparsegate_grow((void **) &ch->logprobs, &ch->cap_logprobs,
                                 ch->n_logprobs,
                                 sizeof(ngx_http_sparsegate_logprob_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    l = &ch->logprobs[ch->n_logprobs++];
    l->text_offset = ch->chars;
    l->n_top = ngx_min(lp->n_top, NGX_HTTP_SG_MAX_TOP);
    if (ngx_http_sparsegate_lp_token(ch, token, lp->logprob, &l->chosen)
        != NGX_OK)
    {
        return NGX_ERROR;
    }
    for (k = 0; k < l->n_top; k++) {
        if (ngx_http_sparsegate_lp_token(ch, lp->top_ids[k],
                                         lp->top_logprobs[k], &l->top[k])
            != NGX_OK)
        {
            return NGX_ERROR;
        }
    }
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_choice_token(ngx_http_sparsegate_choice_t *ch,
    int32_t token, const ngx_http_sparsegate_token_lp_t *lp)
{
    size_t     before, i;
    ngx_int_t  rc;

    if (ch->want_logprobs && lp != NULL
        && ngx_http_sparsegate_choice_logprob(ch, token, lp) != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (ngx_http_sparsegate_grow((void **) &ch->token_end, &ch->cap_tokens,
                                 ch->n_tokens, sizeof(size_t))
        != NGX_OK)
    {
        return NGX_ERROR;
    }

    /* the end of the text is no text */
    before = ch->text.len;
    rc = token == ch->eos ? NGX_OK
                          : ngx_http_sparsegate_text_push(&ch->text, token);
    ch->token_end[ch->n_tokens++] = ch->text.len;
    for (i = before; i < ch->text.len; i++) {
        ch->chars += (ch->text.data[i] & 0xc0) != 0x80;
    }
    return rc;
}


/* The output parser's parts into the choice. */
static void
ngx_http_sparsegate_choice_part(void *ctx, sg_chat_part part, int call,
    const char *s, size_t n, const char *args, size_t n_args)
{
    ngx_http_sparsegate_choice_t  *ch = ctx;
    ngx_http_sparsegate_call_t    *c;
    u_char                         id[64];

    switch (part) {

    case SG_CHAT_REASONING:
        if (ngx_http_sparsegate_buf_add(&ch->reasoning, s, n) != NGX_OK) {
            ch->failed = 1;
        }
        return;

    case SG_CHAT_CONTENT:
        if (ngx_http_sparsegate_buf_add(&ch->content, s, n) != NGX_OK) {
            ch->failed = 1;
        }
        return;

    case SG_CHAT_CALL:
        if (ngx_http_sparsegate_grow((void **) &ch->calls, &ch->cap_calls,
                                     ch->n_calls,
                                     sizeof(ngx_http_sparsegate_call_t))
            != NGX_OK)
        {
            ch->failed = 1;
            return;
        }
        c = &ch->calls[ch->n_calls];
        ngx_memzero(c, sizeof(ngx_http_sparsegate_call_t));
        c->index = (ngx_uint_t) call;
        c->id.len = ngx_snprintf(id, sizeof(id), "call_%s_%ui_%d",
                                 ch->call_prefix, ch->index, call) - id;
        c->id.data = malloc(c->id.len);
        c->name.data = malloc(n + 1);
        c->arguments.data = malloc(n_args + 1);
        if (c->id.data == NULL || c->name.data == NULL
            || c->arguments.data == NULL)
        {
            free(c->id.data);
            free(c->name.data);
            free(c->arguments.data);
            ch->failed = 1;
            return;
        }
        ngx_memcpy(c->id.data, id, c->id.len);
        ngx_memcpy(c->name.data, s, n);
        c->name.len = n;
        ngx_memcpy(c->arguments.data, args, n_args);
        c->arguments.len = n_args;
        ch->n_calls++;
        return;
    }
}


/* The logprob entries' strings: offsets into lp_text become pointers. */
static void
ngx_http_sparsegate_choice_lp_strings(ngx_http_sparsegate_choice_t *ch,
    ngx_uint_t from, ngx_uint_t to, ngx_http_sparsegate_logprob_t *out)
{
    ngx_uint_t                      i, k;
    ngx_http_sparsegate_logprob_t  *l;

    for (i = from; i < to; i++) {
        l = &out[i - from];
        *l = ch->logprobs[i];
        l->chosen.text.data = ch->lp_text.data
                              + (uintptr_t) l->chosen.text.data;
        l->chosen.bytes.data = ch->lp_text.data
                               + (uintptr_t) l->chosen.bytes.data;
        for (k = 0; k < l->n_top; k++) {
            l->top[k].text.data = ch->lp_text.data
                                  + (uintptr_t) l->top[k].text.data;
            l->top[k].bytes.data = ch->lp_text.data
                                   + (uintptr_t) l->top[k].bytes.data;
        }
    }
}


ngx_int_t
ngx_http_sparsegate_choice_delta(ngx_http_sparsegate_choice_t *ch,
    ngx_uint_t last, ngx_http_sparsegate_delta_t *d)
{
    size_t                          len;
    u_char                         *text;
    ngx_http_sparsegate_logprob_t  *lps;

    ngx_memzero(d, sizeof(ngx_http_sparsegate_delta_t));
    d->index = ch->index;
    if (ch->ended) {
        return NGX_OK;
    }
    if (last && ngx_http_sparsegate_text_finish(&ch->text) != NGX_OK) {
        return NGX_ERROR;
    }
    ngx_http_sparsegate_text_next(&ch->text, last, &text, &len);
    if (ch->parser != NULL) {
        if (sg_chat_parser_push(ch->parser, (char *) text, len, (int) last,
                                ngx_http_sparsegate_choice_part, ch)
            != 0)
        {
            return NGX_ERROR;
        }
    } else if (ngx_http_sparsegate_buf_add(&ch->content, text, len)
               != NGX_OK)
    {
        return NGX_ERROR;
    }
    if (ch->failed) {
        return NGX_ERROR;
    }

    d->reasoning.data = ch->reasoning.data + ch->reasoning.sent;
    d->reasoning.len = ch->reasoning.len - ch->reasoning.sent;
    ch->reasoning.sent = ch->reasoning.len;
    d->content.data = ch->content.data + ch->content.sent;
    d->content.len = ch->content.len - ch->content.sent;
    ch->content.sent = ch->content.len;
    d->calls = ch->calls + ch->calls_sent;
    d->n_calls = ch->n_calls - ch->calls_sent;
    ch->calls_sent = ch->n_calls;

    /* the logprobs of the tokens since the last delta: a copy, the
     * strings resolved (this delta's life is the caller's call) */
    if (ch->n_logprobs > ch->logprobs_sent) {
        d->n_logprobs = ch->n_logprobs - ch->logprobs_sent;
        lps = ngx_alloc(d->n_logprobs * sizeof(ngx_http_sparsegate_logprob_t),
                        ngx_cycle->log);
        if (lps == NULL) {
            return NGX_ERROR;
        }
        ngx_http_sparsegate_choice_lp_strings(ch, ch->logprobs_sent,
                                              ch->n_logprobs, lps);
        d->logprobs = lps;
        ch->logprobs_sent = ch->n_logprobs;
    }

    if (last) {
        ch->ended = 1;
        d->finish_reason = (ch->finish == NGX_HTTP_SG_FINISH_LENGTH
                            && !ch->text.stopped)
                           ? "length"
                           : ch->n_calls > 0 ? "tool_calls" : "stop";
    }
    return NGX_OK;
}


void
ngx_http_sparsegate_choice_message(ngx_http_sparsegate_choice_t *ch,
    ngx_http_sparsegate_delta_t *d)
{
    d->index = ch->index;
    d->reasoning.data = ch->reasoning.data;
    d->reasoning.len = ch->reasoning.len;
    d->content.data = ch->content.data;
    d->content.len = ch->content.len;
    d->calls = ch->calls;
    d->n_calls = ch->n_calls;
    d->logprobs = NULL;
    d->n_logprobs = 0;
    if (ch->n_logprobs > 0) {
        d->logprobs = ngx_alloc(ch->n_logprobs
                                * sizeof(ngx_http_sparsegate_logprob_t),
                                ngx_cycle->log);
        if (d->logprobs != NULL) {
            ngx_http_sparsegate_choice_lp_strings(ch, 0, ch->n_logprobs,
                                                  d->logprobs);
            d->n_logprobs = ch->n_logprobs;
        }
    }
}


ngx_int_t
ngx_http_sparsegate_choice_reasoning_tokens(ngx_http_sparsegate_choice_t *ch)
{
    size_t      end;
    ngx_uint_t  i, n;

    if (ch->parser == NULL || ch->reasoning.len == 0) {
        return 0;
    }
    /* the reasoning's bytes and the marker that ends it */
    end = sg_chat_parser_reasoning(ch->parser)
          ? ch->text.len : ch->reasoning.len + sizeof("</think>") - 1;
    n = 0;
    for (i = 0; i < ch->n_tokens; i++) {
        if ((i == 0 ? 0 : ch->token_end[i - 1]) < end) {
            n++;
        }
    }
    return (ngx_int_t) n;
}
