#!/usr/bin/env bash
# Create or refresh .venv: the images' exact lock, the test and lint tools, Ansible, the trainer.
# Idempotent: does nothing when .venv already matches the lock and the requirements files.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  echo "usage: $(basename "$0") [-h]   (needs python3 >= 3.11 with venv)"
  exit 0
fi
cd "${SKFLEET_ROOT}"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || die "python3 >= 3.11 is needed (found $(python3 --version 2>&1))"

stamp=".venv/.skfleet-stamp"
wanted="$(cat docker/requirements.lock tests/requirements.txt ansible/requirements.txt pyproject.toml | sha256sum | cut -d' ' -f1)"
if [[ -f "${stamp}" && "$(cat "${stamp}")" == "${wanted}" ]]; then
  exit 0
fi
log "building .venv from docker/requirements.lock, tests/requirements.txt and ansible/requirements.txt"
python3 -m venv .venv
.venv/bin/pip install --quiet --require-hashes -r docker/requirements.lock
.venv/bin/pip install --quiet -r tests/requirements.txt -r ansible/requirements.txt
.venv/bin/pip install --quiet --no-deps --no-build-isolation -e . 2>/dev/null \
  || .venv/bin/pip install --quiet --no-deps -e .
printf '%s' "${wanted}" >"${stamp}"
