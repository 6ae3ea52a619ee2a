#!/usr/bin/env bash
# Shared helpers of skfleet's scripts: sourced, not run.
# shellcheck disable=SC2034  # variables are used by the scripts that source this file

SKFLEET_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
OFFLINE_BASE_IMAGE="${BASE_TAG:-skfleet/base:bookworm}"

log() { printf '[%s] %s\n' "$(basename "$0")" "$*"; }
die() { printf '[%s] error: %s\n' "$(basename "$0")" "$*" >&2; exit 1; }

# Value of KEY from the environment, else from the root .env, else DEFAULT.
setting() {
  local key="$1" default="$2" value
  if [[ -n "${!key:-}" ]]; then
    printf '%s' "${!key}"
    return
  fi
  value="$(sed -n "s/^${key}=//p" "${SKFLEET_ROOT}/.env" 2>/dev/null | tail -n 1)"
  printf '%s' "${value:-${default}}"
}

# A running Docker engine with Compose v2; installs them (as root) when missing.
ensure_engine() {
  if docker info >/dev/null 2>&1 && docker compose version >/dev/null 2>&1; then
    return
  fi
  if [[ "$(id -u)" -eq 0 ]]; then
    "${SKFLEET_ROOT}/scripts/install-docker.sh"
  else
    die "no running Docker engine with Compose v2: run 'sudo scripts/install-docker.sh' once"
  fi
}

# Exports BASE_IMAGE: the configured one when present or pullable, else the offline
# Debian base built by scripts/build-base-image.sh (air-gapped hosts, CI).
ensure_base_image() {
  local wanted
  wanted="$(setting BASE_IMAGE python:3.12-slim)"
  if docker image inspect "${wanted}" >/dev/null 2>&1; then
    export BASE_IMAGE="${wanted}"
    return
  fi
  log "pulling ${wanted}"
  if timeout 120 docker pull --quiet "${wanted}" >/dev/null 2>&1; then
    export BASE_IMAGE="${wanted}"
    return
  fi
  log "cannot pull ${wanted} (no registry?): using the offline base ${OFFLINE_BASE_IMAGE}"
  "${SKFLEET_ROOT}/scripts/build-base-image.sh"
  export BASE_IMAGE="${OFFLINE_BASE_IMAGE}"
}

# Exports PIP_CA_BUNDLE for the image build: the configured one, else the CA bundle the
# host's own pip trusts (PIP_CERT), so builds work behind the same TLS proxy as the host.
ensure_pip_ca_bundle() {
  local bundle
  bundle="$(setting PIP_CA_BUNDLE "")"
  if [[ -z "${bundle}" && -n "${PIP_CERT:-}" && -f "${PIP_CERT}" ]]; then
    bundle="${PIP_CERT}"
  fi
  if [[ -n "${bundle}" ]]; then
    [[ -f "${bundle}" ]] || die "PIP_CA_BUNDLE=${bundle}: no such file"
    export PIP_CA_BUNDLE="${bundle}"
  fi
}

# Creates the results folder (as you: the trainer's entrypoint runs it as the folder's owner,
# docker/as-owner.sh); OUTPUT_DIR is its absolute path.
ensure_output_folder() {
  local output
  output="$(setting SKFLEET_OUTPUT_DIR ../output)"
  [[ "${output}" = /* ]] || output="${SKFLEET_ROOT}/compose/${output}"
  mkdir -p "${output}"
  OUTPUT_DIR="$(cd "${output}" && pwd)"
}

# The SSH client the Ansible tests drive the VM stand-ins with (ssh, ssh-keygen).
ensure_ssh_client() {
  if command -v ssh >/dev/null 2>&1 && command -v ssh-keygen >/dev/null 2>&1; then
    return
  fi
  [[ "$(id -u)" -eq 0 ]] || die "no ssh client: install openssh-client"
  log "installing openssh-client"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssh-client >/dev/null
}

# Headless Chromium (Debian's package) and a font, for the test that renders the run report.
ensure_chromium() {
  if command -v chromium >/dev/null 2>&1; then
    return
  fi
  [[ "$(id -u)" -eq 0 ]] || die "no chromium: install Debian's chromium package (the run report's browser test)"
  log "installing chromium"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core >/dev/null
}
