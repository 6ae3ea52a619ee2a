#!/bin/sh
# install-lock [--no-compile] VENV LOCK [ROOTS]: install a hash-pinned lock file into the venv VENV
# (made when missing), or only the part of it that the requirements file ROOTS needs
# (docker/lock-subset.py). --no-compile: no bytecode (pip's own option).
# Used by every image stage that installs Python packages (docker/Dockerfile), so that each one
# installs exactly the same way: --require-hashes, no dependency resolution, no pip cache.
#
# pip itself lives in a venv of its own, /opt/pip (the build stage's; later stages mount it):
# it installs into VENV with --python and is in no image, so every package an image holds is
# one of its lock's, at the lock's version.
#
# Behind a TLS-intercepting proxy the build hands pip a CA bundle as the BuildKit secret
# `pip_ca`; it is read from /run/secrets (a tmpfs mount for that RUN alone), never written
# into a layer.
set -eu
no_compile=""
if [ "$1" = --no-compile ]; then
  no_compile=yes
  shift
fi
venv="$1"
lock="$2"
roots="${3:-}"
tools=/opt/pip
[ -x "${tools}/bin/pip" ] || python3 -m venv "${tools}"
[ -x "${venv}/bin/python" ] || python3 -m venv --without-pip "${venv}"
if [ -s /run/secrets/pip_ca ]; then
  export PIP_CERT=/run/secrets/pip_ca
fi
part="${lock}"
if [ -n "${roots}" ]; then
  part="$(mktemp)"
  trap 'rm -f "${part}"' EXIT
  lock-subset "${lock}" "${roots}" >"${part}"
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
  "${tools}/bin/pip" --python "${venv}/bin/python" install --no-deps --require-hashes ${no_compile:+--no-compile} -r "${part}"
