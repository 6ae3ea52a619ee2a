#!/usr/bin/env bash
# The benchmark of docs/benchmarks.md, Compose stack included: one command.
#
#   scripts/bench.sh                                # 563,000 synthetic rows, every path, 3 rounds
#   scripts/bench.sh --rows 200000 --repeat 1       # any `python -m skfleet bench` arguments
#
# Builds the images as scripts/up.sh does, starts the stack's scheduler and workers, and runs
# `python -m skfleet bench` in the trainer's container: scikit-learn serial and with loky, the
# shared-trees search with loky, the trainer's search on a local cluster with and without
# shared trees, the same on the stack (`compose`) and successive halving, in turns, on the same
# cores (`--paths ...,demo` adds the original demo). The stack stays up afterwards
# (`docker compose down` stops it).
# Writes bench-<UTC time>.json and .png into the results folder (./output by default).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

DEFAULT_PATHS=serial,loky,loky-shared,dask,dask-unshared,compose,halving

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,13s/^# \{0,1\}//p' "$0"
    exit 0
  fi
  cd "${SKFLEET_ROOT}"
  ensure_engine
  ensure_base_image
  ensure_pip_ca_bundle
  local stamp
  ensure_output_folder
  stamp="$(date -u +%Y%m%dT%H%M%SZ)"
  log "base image ${BASE_IMAGE}; results in ${OUTPUT_DIR}"
  docker compose build scheduler trainer
  docker compose up --detach --wait scheduler worker
  local arguments=("$@")
  if [[ " $* " != *" --paths "* && " $* " != *" --paths="* ]]; then
    arguments=(--paths "${DEFAULT_PATHS}" "${arguments[@]}")
  fi
  docker compose run --rm --no-deps trainer bench \
    --json "/output/bench-${stamp}.json" --plot "/output/bench-${stamp}.png" "${arguments[@]}"
}

main "$@"
