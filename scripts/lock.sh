#!/usr/bin/env bash
# Regenerate docker/requirements.lock (exact versions and hashes) from docker/requirements.in.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  echo "usage: $(basename "$0") [-h]   (run scripts/dev-env.sh first; takes a few minutes)"
  exit 0
fi
cd "${SKFLEET_ROOT}/docker"
"${SKFLEET_ROOT}/.venv/bin/pip-compile" --quiet --strip-extras --generate-hashes --allow-unsafe \
  --no-emit-index-url --no-emit-find-links -o requirements.lock requirements.in
log "wrote docker/requirements.lock"
