#!/bin/sh
# slim-venv VENV: leave in the venv VENV what running its packages needs, and nothing their
# developers alone use. The runtime image (scheduler and workers) ships to every VM, so each
# megabyte counts many times (docker/Dockerfile). Versions and metadata are untouched: pip sees
# the same packages at the same versions, and `pip check` passes.
#
#   1. test suites, C/C++ headers, sources and static libraries, Cython sources and type stubs (.pyi):
#      for testing a package, building against it, or type-checking code that uses it;
#   2. optional parts nothing the kit runs uses, each of which its package treats as absent when
#      it can't load it: pyarrow's Flight (RPC) and its own S3 client (`pyarrow.fs.S3FileSystem`;
#      fsspec's filesystems are untouched; Arrow, Parquet and datasets stay), and Pillow's AVIF codec
#      (bokeh, Pillow's one user here, decodes no images);
#   3. bokeh's kit for writing extensions (its TypeScript compiler, type declarations and the
#      unminified bundles): the dashboards load the minified bundles;
#   4. debug symbols of the shared libraries (strip --strip-unneeded; the dynamic symbols stay), each
#      stripped copy kept only where the dynamic loader still loads it: strip mangles a library that
#      patchelf edited (auditwheel does, grafting one into a wheel), and ld.so then refuses it
#      ("ELF load command address/offset not page-aligned");
#   5. the second copy of identical files (pyarrow ships libarrow_python three times): hard links.
# Needs binutils (strip) and util-linux (hardlink): the build stage has them, no image does.
set -eu
venv="$1"
site="$("${venv}/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
before="$(du -sm "${venv}" | cut -f1)"

# unloadable: the shared libraries of the venv that the dynamic loader refuses, one per line.
unloadable() {
  find "${site}" -type f \( -name '*.so' -o -name '*.so.[0-9]*' \) -exec "${venv}/bin/python" -c '
import ctypes, sys
for library in sys.argv[1:]:
    try:
        ctypes.CDLL(library)
    except OSError:
        print(library)
' {} + | sort
}
refused_before="$(unloadable)"

find "${site}" -depth -type d \( -name tests -o -name test \) -exec rm -rf {} +
find "${site}" -type f \( -name '*.h' -o -name '*.hpp' -o -name '*.c' -o -name '*.cc' -o -name '*.cpp' -o -name '*.a' \
  -o -name '*.pxd' -o -name '*.pyx' -o -name '*.pxi' -o -name '*.pyi' \) -delete

rm -f "${site}"/pyarrow/libarrow_flight.so* "${site}"/pyarrow/libarrow_python_flight.so* "${site}"/pyarrow/_flight.*.so \
  "${site}"/pyarrow/libarrow_s3.so* "${site}"/pyarrow/_s3fs.*.so \
  "${site}"/PIL/_avif.*.so "${site}"/pillow.libs/libavif-*.so*

static="${site}/bokeh/server/static"
if [ -d "${static}" ]; then
  for minified in "${static}"/js/*.min.js; do
    rm -f "${minified%.min.js}.js"
  done
  rm -f "${static}/js/compiler.js"
  find "${static}" -name '*.d.ts' -delete
fi

loads() { "${venv}/bin/python" -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1])' "$1" 2>/dev/null; }
kept=0
libraries="$(mktemp)"
find "${site}" -type f \( -name '*.so' -o -name '*.so.[0-9]*' \) >"${libraries}"
while read -r library; do
  loads "${library}" || continue  # one that can't load here anyway (a missing optional library) stays as it is
  cp -p "${library}" "${library}.unstripped"
  if strip --strip-unneeded "${library}" && loads "${library}"; then
    rm "${library}.unstripped"
  else
    mv "${library}.unstripped" "${library}"
    kept=$((kept + 1))
  fi
done <"${libraries}"
rm -f "${libraries}"
echo "slim-venv: ${kept} shared libraries kept unstripped (the loader refused them stripped)"
hardlink --quiet "${venv}"

# Nothing left behind needs what went: every shared library that loaded still does, its dependencies found.
refused_now="$(printf '%s\n' "$(unloadable)" "${refused_before}" "${refused_before}" | sort | uniq -u)"
if [ -n "${refused_now}" ]; then
  echo "slim-venv: shared libraries that no longer load (they need something removed):" >&2
  echo "${refused_now}" >&2
  exit 1
fi
if [ -n "${refused_before}" ]; then
  echo "slim-venv: shared libraries that did not load before either (left as they were): ${refused_before}" | tr '\n' ' '
  echo
fi

echo "slim-venv: ${venv} ${before} MB -> $(du -sm "${venv}" | cut -f1) MB"
