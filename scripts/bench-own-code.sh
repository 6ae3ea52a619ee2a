#!/usr/bin/env bash
# Your own scikit-learn code on the stack against local loky, side by side (docs/cluster-pays.md).
#
#   scripts/bench-own-code.sh                 # 3 rounds of each part
#   scripts/bench-own-code.sh --rounds 5 --part digits
#
# Builds the images as scripts/up.sh does, starts the stack's scheduler and workers, then runs
# scripts/bench_own_code.py from this checkout's .venv (scripts/dev-env.sh) as a client on this
# machine: the README's digits forest search under loky, joblib's "dask" backend and skfleet's,
# and the per-fit time from which the cluster pays. Arguments go to bench_own_code.py.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,10s/^# \{0,1\}//p' "$0"
    exit 0
  fi
  cd "${SKFLEET_ROOT}"
  "${SKFLEET_ROOT}/scripts/dev-env.sh"
  ensure_engine
  ensure_base_image
  ensure_pip_ca_bundle
  docker compose build scheduler
  docker compose up --detach --wait scheduler worker
  local published
  published="$(docker compose port scheduler 8786)"
  .venv/bin/python scripts/bench_own_code.py --scheduler "tcp://${published}" "$@"
}

main "$@"
