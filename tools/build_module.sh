#!/usr/bin/env bash
# Builds the nginx dynamic module (NGINX.md's recipe): Debian's nginx-dev
# sources are configured with the packaged nginx's own flags (--with-compat,
# so the .so is binary compatible) plus --add-dynamic-module=<repo>, and only
# the `modules` target is made.  Output: build/nginx/ngx_http_sparsegate_module.so
# and the page's files in build/nginx/ui/ (build-san/nginx/... with SAN=1:
# module and libraries under ASan + UBSan).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

if [ "${SAN:-0}" = 1 ]; then
    B=$root/build-san
    # the test build: fault injection too (sg_fault.h), the module's nginx
    # pool calls routed through the countdown like its mallocs
    extra_cc="-g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -DSG_FAULT_INJECTION=1"
    extra_ld="-fsanitize=address,undefined"
    for f in ngx_palloc ngx_pnalloc ngx_pcalloc ngx_pool_cleanup_add \
             ngx_create_temp_buf ngx_alloc_chain_link; do
        extra_ld="$extra_ld -Wl,--wrap=$f"
    done
    make -s SAN=1 build-san/libsparsegate.a build-san/libsgretrieval.a \
        build-san/link-flags.txt
else
    B=$root/build
    extra_cc=""
    extra_ld=""
    make -s build/libsparsegate.a build/libsgretrieval.a build/link-flags.txt
fi

src=/usr/share/nginx/src
[ -d "$src" ] || { echo "build_module: $src missing (apt-get install nginx-dev)" >&2; exit 1; }
out=$B/nginx
mkdir -p "$out"

# Configure once per nginx-dev version, and again when config or the set of
# module sources and headers changes (configure writes them into the
# Makefile, dependencies included).
stamp=$out/configured
files=$(ls ngx_module/*.[ch] engine/include/*.h retrieval/*.h | md5sum | cut -c1-32)
want="$(dpkg-query -W -f='${Version}' nginx-dev 2>/dev/null) $(md5sum config | cut -c1-32) $files ${SAN:-0} $(echo "$extra_cc $extra_ld" | md5sum | cut -c1-32)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -f "$out/objs/Makefile" ]; then
    rm -rf "$out/src" "$out/objs"
    cp -r "$src" "$out/src"
    (
        cd "$out/src"
        # shellcheck disable=SC1091
        . ./conf_flags
        SG_LIB_DIR=$B ./configure \
            --with-cc-opt="$(dpkg-buildflags --get CFLAGS) -fPIC $(dpkg-buildflags --get CPPFLAGS) $extra_cc" \
            --with-ld-opt="$(dpkg-buildflags --get LDFLAGS) -fPIC $extra_ld" \
            "${NGX_CONF_FLAGS[@]}" \
            --add-dynamic-module="$root" \
            --builddir="$out/objs" >"$out/configure.log" 2>&1 \
            || { tail -n 30 "$out/configure.log"; exit 1; }
    )
    echo "$want" >"$stamp"
fi

# The libraries are not make dependencies of the .so in nginx's Makefile:
# relink whenever one is newer.
so=$out/objs/ngx_http_sparsegate_module.so
for lib in "$B/libsparsegate.a" "$B/libsgretrieval.a"; do
    [ -f "$so" ] && [ "$lib" -nt "$so" ] && rm -f "$so"
done
make -s -f "$out/objs/Makefile" -C "$out/src" modules >"$out/make.log" 2>&1 \
    || { cat "$out/make.log"; exit 1; }
cp "$so" "$out/ngx_http_sparsegate_module.so"
# The page's files (HTML, CSS, JavaScript: no build step) beside the
# module, where its "ui" endpoint reads them at configuration time.
rm -rf "$out/ui.tmp"
cp -r ngx_module/ui "$out/ui.tmp"
rm -rf "$out/ui"
mv "$out/ui.tmp" "$out/ui"
echo "built $out/ngx_http_sparsegate_module.so (and its page, $out/ui/)"
