#!/usr/bin/env bash
# The test command: every test, Docker-backed end-to-end ones included.
#
#   scripts/test.sh                  # all of it, one phase after the other (about 45 minutes on 2 cores, cold;
#                                    # Ansible on 3 VMs included; .ci/run overlaps the VM tests with the rest)
#   scripts/test.sh -m "not docker"  # the fast part, no Docker engine needed
#
# Arguments go to pytest. Installs Docker and Compose (as root), the offline base image and
# Chromium (the run report's browser test) when they are missing, so it passes on a fresh
# Debian/Ubuntu machine.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  sed -n '2,10s/^# \{0,1\}//p' "$0"
  exit 0
fi
cd "${SKFLEET_ROOT}"
"${SKFLEET_ROOT}/scripts/dev-env.sh"
ensure_engine
ensure_ssh_client
ensure_chromium
ensure_base_image
ensure_pip_ca_bundle
exec .venv/bin/pytest "$@"
