#!/usr/bin/env bash
# Every linter the project holds itself to: ruff, yamllint, hadolint, shellcheck, ansible-lint, compose config.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
  echo "usage: $(basename "$0") [-h]   (run scripts/dev-env.sh first)"
  exit 0
fi
cd "${SKFLEET_ROOT}"
bin=.venv/bin
log "ruff";       "${bin}/ruff" check .
"${bin}/ruff" format --check .
log "yamllint";   "${bin}/yamllint" --strict -c .yamllint.yaml .
log "hadolint";   "${bin}/hadolint" --failure-threshold info docker/Dockerfile
log "shellcheck"; "${bin}/shellcheck" -x scripts/*.sh docker/*.sh .ci/run
log "ansible-lint (production profile)"; (cd ansible && PATH="${SKFLEET_ROOT}/.venv/bin:${PATH}" ansible-lint --strict -q)
if docker compose version >/dev/null 2>&1; then
  log "compose config"; docker compose config --quiet
fi
log "all clean"
