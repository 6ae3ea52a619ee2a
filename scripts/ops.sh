#!/usr/bin/env bash
# Day-2 tasks (status, logs, restart-worker, retire-worker, scale, tunnel, train) for the
# local Compose stack, or with -i INVENTORY for the VMs of an Ansible inventory (over SSH,
# with Fabric). `scripts/ops.sh --help` lists them; docs/runbooks/ says when to use which.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

"${SKFLEET_ROOT}/scripts/dev-env.sh"
export SKFLEET_ROOT  # the checkout skfleet-ops acts on: this one
exec "${SKFLEET_ROOT}/.venv/bin/skfleet-ops" "$@"
