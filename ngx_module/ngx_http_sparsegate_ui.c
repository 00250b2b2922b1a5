/*
 * The page: static files (HTML, CSS, JavaScript) served by the "ui"
 * endpoint from a prefix location, "location ^~ /ui/ { sparsegate_api ui;
 * }": what follows the prefix names the file, nothing the index.html.
 *
 * The files are read at configuration time from sparsegate_ui_root, by
 * default the "ui" directory beside the module's .so (where
 * tools/build_module.sh installs them), and kept in the configuration's
 * memory: nginx -t reports a missing file, a reload picks up new ones, and
 * the worker never reads a disk.  Only the names found there are served,
 * so no path of the request reaches the file system.
 */

#include "ngx_http_sparsegate_endpoints.h"
#include "ngx_http_sparsegate_conf.h"
#include "ngx_http_sparsegate_errors.h"
#include "ngx_http_sparsegate_send.h"

/* after nginx's headers: they define _GNU_SOURCE, which dladdr needs */
#include <dirent.h>
#include <dlfcn.h>


/* the page's files are small: a directory over this is a mistake */
#define NGX_HTTP_SG_UI_MAX_BYTES  (4 * 1024 * 1024)


typedef struct {
    ngx_str_t    name;
    const char  *type;
    ngx_str_t    data;
    time_t       mtime;
} ngx_http_sparsegate_ui_file_t;


typedef struct {
    const char  *ext;
    const char  *type;
} ngx_http_sparsegate_ui_type_t;


static ngx_http_sparsegate_ui_type_t  ngx_http_sparsegate_ui_types[] = {
    { ".html", "text/html; charset=utf-8" },
    { ".js", "text/javascript; charset=utf-8" },
    { ".css", "text/css; charset=utf-8" },
    { ".svg", "image/svg+xml" },
    { ".png", "image/png" },
    { ".ico", "image/x-icon" },
    { ".json", "application/json" },
    { NULL, NULL }
};


static ngx_str_t  ngx_http_sparsegate_ui_index = ngx_string("index.html");

/* The page loads nothing from elsewhere: scripts, styles and requests go
 * to this gateway only. */
static ngx_str_t  ngx_http_sparsegate_ui_csp = ngx_string(
    "default-src 'self'; img-src 'self' data:; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'");
static ngx_str_t  ngx_http_sparsegate_ui_nosniff = ngx_string("nosniff");
static ngx_str_t  ngx_http_sparsegate_ui_no_cache = ngx_string("no-cache");


static const char *
ngx_http_sparsegate_ui_type(const char *name)
{
    size_t                          n, e;
    ngx_http_sparsegate_ui_type_t  *t;

    n = ngx_strlen(name);
    for (t = ngx_http_sparsegate_ui_types; t->ext != NULL; t++) {
        e = ngx_strlen(t->ext);
        if (n > e && ngx_strcmp(name + n - e, t->ext) == 0) {
            return t->type;
        }
    }
    return NULL;
}


/* The "ui" directory beside the module's .so. */
static ngx_int_t
ngx_http_sparsegate_ui_default_root(ngx_conf_t *cf, ngx_str_t *root)
{
    u_char   *p, *slash;
    Dl_info   info;

    if (dladdr((void *) ngx_http_sparsegate_ui, &info) == 0
        || info.dli_fname == NULL)
    {
        return NGX_ERROR;
    }

    slash = (u_char *) strrchr(info.dli_fname, '/');
    if (slash == NULL) {
        return NGX_ERROR;
    }

    root->len = slash - (u_char *) info.dli_fname + sizeof("/ui") - 1;
    root->data = ngx_pnalloc(cf->pool, root->len + 1);
    if (root->data == NULL) {
        return NGX_ERROR;
    }
    p = ngx_cpymem(root->data, info.dli_fname,
                   slash - (u_char *) info.dli_fname);
    ngx_memcpy(p, "/ui", sizeof("/ui"));
    return NGX_OK;
}


static char *
ngx_http_sparsegate_ui_read(ngx_conf_t *cf, ngx_str_t *root, const char *name,
    ngx_http_sparsegate_ui_file_t *f, size_t *total)
{
    u_char           *path;
    ssize_t           n;
    ngx_fd_t          fd;
    ngx_file_info_t   fi;

    path = ngx_pnalloc(cf->pool, root->len + ngx_strlen(name) + 2);
    if (path == NULL) {
        return NGX_CONF_ERROR;
    }
    ngx_sprintf(path, "%V/%s%Z", root, name);

    fd = ngx_open_file(path, NGX_FILE_RDONLY, NGX_FILE_OPEN, 0);
    if (fd == NGX_INVALID_FILE) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "sparsegate ui: cannot open \"%s\"", path);
        return NGX_CONF_ERROR;
    }
    if (ngx_fd_info(fd, &fi) == NGX_FILE_ERROR
        || *total + ngx_file_size(&fi) > NGX_HTTP_SG_UI_MAX_BYTES)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate ui: \"%s\" cannot be read, or the "
                           "page's files pass %d bytes", path,
                           NGX_HTTP_SG_UI_MAX_BYTES);
        (void) ngx_close_file(fd);
        return NGX_CONF_ERROR;
    }

    f->data.len = (size_t) ngx_file_size(&fi);
    f->data.data = ngx_pnalloc(cf->pool, f->data.len + 1);
    f->mtime = ngx_file_mtime(&fi);
    n = f->data.data ? read(fd, f->data.data, f->data.len) : -1;
    (void) ngx_close_file(fd);
    if (n != (ssize_t) f->data.len) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "sparsegate ui: cannot read \"%s\"", path);
        return NGX_CONF_ERROR;
    }
    *total += f->data.len;

    f->name.len = ngx_strlen(name);
    f->name.data = ngx_pnalloc(cf->pool, f->name.len);
    if (f->name.data == NULL) {
        return NGX_CONF_ERROR;
    }
    ngx_memcpy(f->name.data, name, f->name.len);
    return NGX_CONF_OK;
}


char *
ngx_http_sparsegate_ui_load(ngx_conf_t *cf,
    ngx_http_sparsegate_loc_conf_t *slcf)
{
    DIR                            *dir;
    char                           *rv;
    size_t                          total;
    ngx_str_t                       root;
    const char                     *type;
    ngx_uint_t                      i, index;
    struct dirent                  *de;
    ngx_http_sparsegate_ui_file_t  *f;

    root = slcf->ui_root;
    if (root.len == 0
        && ngx_http_sparsegate_ui_default_root(cf, &root) != NGX_OK)
    {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate ui: cannot find the module's own "
                           "directory: set sparsegate_ui_root");
        return NGX_CONF_ERROR;
    }

    slcf->ui_files = ngx_array_create(cf->pool, 8,
                                      sizeof(ngx_http_sparsegate_ui_file_t));
    if (slcf->ui_files == NULL) {
        return NGX_CONF_ERROR;
    }

    dir = opendir((char *) root.data);
    if (dir == NULL) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, ngx_errno,
                           "sparsegate ui: cannot open the page's directory "
                           "\"%V\" (tools/build_module.sh installs it "
                           "beside the module; or set sparsegate_ui_root)",
                           &root);
        return NGX_CONF_ERROR;
    }

    rv = NGX_CONF_OK;
    total = 0;
    while (rv == NGX_CONF_OK && (de = readdir(dir)) != NULL) {
        type = ngx_http_sparsegate_ui_type(de->d_name);
        if (de->d_name[0] == '.' || type == NULL) {
            continue;
        }
        f = ngx_array_push(slcf->ui_files);
        if (f == NULL) {
            rv = NGX_CONF_ERROR;
            break;
        }
        f->type = type;
        rv = ngx_http_sparsegate_ui_read(cf, &root, de->d_name, f, &total);
    }
    closedir(dir);
    if (rv != NGX_CONF_OK) {
        return rv;
    }

    f = slcf->ui_files->elts;
    index = 0;
    for (i = 0; i < slcf->ui_files->nelts; i++) {
        index |= (f[i].name.len == ngx_http_sparsegate_ui_index.len
                  && ngx_strncmp(f[i].name.data,
                                 ngx_http_sparsegate_ui_index.data,
                                 f[i].name.len) == 0);
    }
    if (!index) {
        ngx_conf_log_error(NGX_LOG_EMERG, cf, 0,
                           "sparsegate ui: no index.html in \"%V\"", &root);
        return NGX_CONF_ERROR;
    }

    return NGX_CONF_OK;
}


static ngx_int_t
ngx_http_sparsegate_ui_header(ngx_http_request_t *r, const char *key,
    ngx_str_t *value)
{
    ngx_table_elt_t  *h;

    h = ngx_list_push(&r->headers_out.headers);
    if (h == NULL) {
        return NGX_ERROR;
    }
    h->hash = 1;
    h->key.data = (u_char *) key;
    h->key.len = ngx_strlen(key);
    h->value = *value;
    return NGX_OK;
}


ngx_int_t
ngx_http_sparsegate_ui(ngx_http_request_t *r)
{
    ngx_str_t                        name;
    ngx_uint_t                       i;
    ngx_http_core_loc_conf_t        *clcf;
    ngx_http_sparsegate_ui_file_t   *f;
    ngx_http_sparsegate_loc_conf_t  *slcf;

    slcf = ngx_http_get_module_loc_conf(r, ngx_http_sparsegate_module);
    clcf = ngx_http_get_module_loc_conf(r, ngx_http_core_module);

    name.data = r->uri.data + ngx_min(clcf->name.len, r->uri.len);
    name.len = r->uri.data + r->uri.len - name.data;
    if (name.len == 0) {
        name = ngx_http_sparsegate_ui_index;
    }

    f = slcf->ui_files ? slcf->ui_files->elts : NULL;
    for (i = 0; f != NULL && i < slcf->ui_files->nelts; i++) {
        if (f[i].name.len == name.len
            && ngx_strncmp(f[i].name.data, name.data, name.len) == 0)
        {
            break;
        }
    }
    if (f == NULL || i == slcf->ui_files->nelts) {
        return ngx_http_sparsegate_error(r, NGX_HTTP_NOT_FOUND,
                                         NGX_HTTP_SG_ERR_NOT_FOUND, NULL,
                                         "no page file \"%V\"", &name);
    }
    f = &f[i];

    if (ngx_http_sparsegate_ui_header(r, "Content-Security-Policy",
                                      &ngx_http_sparsegate_ui_csp)
        != NGX_OK
        || ngx_http_sparsegate_ui_header(r, "X-Content-Type-Options",
                                         &ngx_http_sparsegate_ui_nosniff)
           != NGX_OK
        || ngx_http_sparsegate_ui_header(r, "Cache-Control",
                                         &ngx_http_sparsegate_ui_no_cache)
           != NGX_OK)
    {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    /* revalidated each load: an If-None-Match that matches gets a 304 from
     * nginx's not-modified filter */
    r->headers_out.last_modified_time = f->mtime;
    r->headers_out.content_length_n = f->data.len;
    if (ngx_http_set_etag(r) != NGX_OK) {
        return NGX_HTTP_INTERNAL_SERVER_ERROR;
    }

    return ngx_http_sparsegate_send_text(r, NGX_HTTP_OK, f->type,
                                         f->data.data, f->data.len);
}
