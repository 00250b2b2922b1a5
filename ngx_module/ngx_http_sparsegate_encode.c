/*
 * Prompt text to token ids, inline or in nginx's thread pool.
 */

#include "ngx_http_sparsegate_encode.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_offload.h"
#include "ngx_http_sparsegate_send.h"


typedef struct {
    char                            *text;       /* malloc'ed */
    size_t                           len;
    size_t                          *spans;      /* malloc'ed: a chat's
                                                    markup, or NULL */
    int                              n_spans;
    int32_t                         *ids;        /* malloc'ed */
    size_t                           n_ids;
    int                              failed;     /* out of memory */
    const sg_tokenizer              *tokenizer;
    ngx_http_sparsegate_encoded_pt   done;
    void                            *data;
} ngx_http_sparsegate_encoding_t;


static void
ngx_http_sparsegate_encoding_cleanup(void *data)
{
    ngx_http_sparsegate_encoding_t *enc = data;

    free(enc->text);
    free(enc->spans);
    free(enc->ids);
    enc->text = NULL;
    enc->spans = NULL;
    enc->ids = NULL;
}


/* in a thread, or inline */
static void
ngx_http_sparsegate_encoding_work(void *data)
{
    ngx_http_sparsegate_encoding_t *enc = data;

    if (enc->spans != NULL) {
        enc->failed = sg_tokenizer_encode_spans(enc->tokenizer, enc->text,
                                                enc->len, enc->spans,
                                                enc->n_spans, &enc->ids,
                                                &enc->n_ids) != 0;
        return;
    }
    enc->failed = sg_tokenizer_encode(enc->tokenizer, enc->text, enc->len, 1,
                                      &enc->ids, &enc->n_ids) != 0;
}


static ngx_int_t
ngx_http_sparsegate_encoded(ngx_http_request_t *r,
    ngx_http_sparsegate_encoding_t *enc)
{
    ngx_int_t  rc;

    ngx_log_debug2(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate encode: %uz bytes, %uz tokens", enc->len,
                   enc->n_ids);

    if (enc->failed) {
        rc = NGX_HTTP_INTERNAL_SERVER_ERROR;

    } else if (enc->n_ids == 0) {
        rc = ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                 NGX_HTTP_SG_ERR_BAD_REQUEST, "prompt",
                 "the prompt encodes to no tokens");

    } else {
        rc = enc->done(r, enc->data, enc->text, enc->len, enc->ids,
                       enc->n_ids);
    }

    ngx_http_sparsegate_encoding_cleanup(enc);
    return rc;
}


static void
ngx_http_sparsegate_encoding_done(ngx_http_request_t *r, void *data)
{
    ngx_int_t  rc;

    rc = ngx_http_sparsegate_encoded(r, data);
    if (rc != NGX_DONE) {
        ngx_http_sparsegate_finalize(r, rc);
    }
}


static ngx_int_t
ngx_http_sparsegate_encode_spans(ngx_http_request_t *r, char *text,
    size_t len, size_t *spans, int n_spans,
    ngx_http_sparsegate_encoded_pt done, void *data)
{
    ngx_int_t                         rc;
    ngx_pool_cleanup_t               *cln;
    ngx_http_sparsegate_encoding_t   *enc;
    ngx_http_sparsegate_main_conf_t  *smcf;

    smcf = ngx_http_get_module_main_conf(r, ngx_http_sparsegate_module);

    cln = ngx_pool_cleanup_add(r->pool,
                               sizeof(ngx_http_sparsegate_encoding_t));
    if (cln == NULL) {
        free(text);
        free(spans);
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }
    enc = cln->data;
    ngx_memzero(enc, sizeof(ngx_http_sparsegate_encoding_t));
    enc->text = text;
    enc->len = len;
    enc->spans = spans;
    enc->n_spans = n_spans;
    enc->tokenizer = smcf->tokenizer;
    enc->done = done;
    enc->data = data;
    cln->handler = ngx_http_sparsegate_encoding_cleanup;

    if (len >= NGX_HTTP_SG_OFFLOAD_BYTES) {
        rc = ngx_http_sparsegate_offload(r, ngx_http_sparsegate_encoding_work,
                                         ngx_http_sparsegate_encoding_done,
                                         enc);
        if (rc == NGX_DONE) {
            /* notice a client that leaves meanwhile */
            r->read_event_handler = ngx_http_test_reading;
            return NGX_DONE;
        }
        if (rc == NGX_ERROR) {
            return NGX_HTTP_INTERNAL_SERVER_ERROR;
        }
    }

    ngx_http_sparsegate_encoding_work(enc);
    return ngx_http_sparsegate_encoded(r, enc);
}


ngx_int_t
ngx_http_sparsegate_encode(ngx_http_request_t *r, char *text, size_t len,
    ngx_http_sparsegate_encoded_pt done, void *data)
{
    return ngx_http_sparsegate_encode_spans(r, text, len, NULL, 0, done,
                                            data);
}


ngx_int_t
ngx_http_sparsegate_encode_chat(ngx_http_request_t *r,
    const sg_chat_message *msgs, ngx_uint_t n, ngx_uint_t thinking,
    ngx_http_sparsegate_encoded_pt done, void *data)
{
    int             rc;
    char            err[512];
    sg_chat_prompt  p;

    rc = sg_chat_render(msgs, (int) n, (int) thinking, &p, err, sizeof(err));
    if (rc == SG_CHAT_ENOMEM) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_SERVICE_UNAVAILABLE,
                   NGX_HTTP_SG_ERR_NO_MEMORY, NULL, "out of memory");
    }
    if (rc != 0) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_BAD_REQUEST,
                   NGX_HTTP_SG_ERR_BAD_REQUEST, "messages", "%s", err);
    }
    ngx_log_debug3(NGX_LOG_DEBUG_HTTP, r->connection->log, 0,
                   "sparsegate encode: a chat of %ui messages, %uz bytes, "
                   "thinking %ui", n, p.len, thinking);
    /* the prompt's markup always has spans: BOS is one */
    return ngx_http_sparsegate_encode_spans(r, p.text, p.len, p.spans,
                                            p.n_spans, done, data);
}
