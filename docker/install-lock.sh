#!/bin/sh
# install-lock VENV LOCK: install a hash-pinned lock file into the venv VENV (made when missing).
# Used by every image stage that installs Python packages (docker/Dockerfile), so that each one
# installs exactly the same way: --require-hashes, no dependency resolution, no pip cache.
#
# Behind a TLS-intercepting proxy the build hands pip a CA bundle as the BuildKit secret
# `pip_ca`; it is read from /run/secrets (a tmpfs mount for that RUN alone), never written
# into a layer.
set -eu
venv="$1"
lock="$2"
[ -x "${venv}/bin/python" ] || python3 -m venv "${venv}"
if [ -s /run/secrets/pip_ca ]; then
  export PIP_CERT=/run/secrets/pip_ca
fi
PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 \
  "${venv}/bin/pip" install --no-deps --require-hashes -r "${lock}"
