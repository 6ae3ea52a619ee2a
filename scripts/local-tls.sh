#!/usr/bin/env bash
# Make the CA and certificates of the local stack's TLS profile (compose/tls.yaml) with the
# VM path's own role (ansible/local-tls.yml), then start the stack on them:
#
#   scripts/local-tls.sh                                   # into compose/tls/ (or SKFLEET_TLS_DIR)
#   scripts/local-tls.sh -e dask_tls_rotate=true           # new keys (-e dask_tls_rotate_ca=true: new CA too)
#   docker compose -f compose.yaml -f compose/tls.yaml up  # or COMPOSE_FILE in .env
#
# The keys belong to the user the trainer runs as: SKFLEET_UID:SKFLEET_GID when set in the
# environment, else you (root: 10001:10001, as scripts/up.sh). Idempotent. Needs .venv
# (scripts/dev-env.sh); more arguments go to ansible-playbook.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

usage() {
  sed -n '2,12s/^# \{0,1\}//p' "$0"
}

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi
  local playbook="${SKFLEET_ROOT}/.venv/bin/ansible-playbook"
  [[ -x "${playbook}" ]] || die "no ${playbook}: run scripts/dev-env.sh first"

  # As scripts/up.sh decides who the trainer runs as; root gets the images' unprivileged user.
  local uid gid dir
  uid="${SKFLEET_UID:-$(id -u)}"
  gid="${SKFLEET_GID:-$(id -g)}"
  if [[ "${uid}" -eq 0 ]]; then
    uid=10001
    gid=10001
  fi
  # Relative to the repository root, as Compose reads it from compose/tls.yaml.
  dir="$(setting SKFLEET_TLS_DIR ./compose/tls)"
  [[ "${dir}" = /* ]] || dir="${SKFLEET_ROOT}/${dir#./}"

  log "CA and certificates in ${dir}, keys for uid ${uid}, gid ${gid}"
  cd "${SKFLEET_ROOT}/ansible"
  exec "${playbook}" -i localhost, local-tls.yml \
    -e "{\"dask_tls_local_dir\": \"${dir}\", \"dask_tls_local_uid\": ${uid}, \"dask_tls_local_gid\": ${gid}}" "$@"
}

main "$@"
