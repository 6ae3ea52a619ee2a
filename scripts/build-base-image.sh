#!/usr/bin/env bash
# Build a Python base image offline from a Debian mirror (debootstrap + docker import).
#
# For hosts that cannot reach a container registry (air-gapped networks, our CI): the
# result stands in for python:3.12-slim. Pass it to the build as BASE_IMAGE (see .env).
# Idempotent: does nothing when the tag already exists, unless --force is given.
set -euo pipefail

SUITE="${BASE_SUITE:-bookworm}"
MIRROR="${BASE_MIRROR:-http://deb.debian.org/debian}"
TAG="${BASE_TAG:-skfleet/base:${SUITE}}"
# What the images need from the OS: Python with venv, CA certificates for pip, and
# the OpenMP runtime scikit-learn's wheels load.
PACKAGES="python3,python3-venv,ca-certificates,libgomp1"

usage() {
  cat <<USAGE
usage: $(basename "$0") [-h] [--force]
Builds ${TAG} from ${MIRROR} (${SUITE}) with debootstrap and imports it into Docker.
Environment: BASE_SUITE, BASE_MIRROR, BASE_TAG. Needs root, debootstrap and a running dockerd.
USAGE
}

log() { printf '[build-base-image] %s\n' "$*"; }

main() {
  local force=0
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --force) force=1 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
  esac
  if [[ "${force}" -eq 0 ]] && docker image inspect "${TAG}" >/dev/null 2>&1; then
    log "${TAG} already present"
    return
  fi
  if ! command -v debootstrap >/dev/null 2>&1; then
    log "installing debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  fi
  ROOTFS="$(mktemp -d /var/tmp/skfleet-rootfs.XXXXXX)"
  trap 'rm -rf "${ROOTFS}"' EXIT
  local rootfs="${ROOTFS}"
  log "debootstrap ${SUITE} from ${MIRROR} (a few minutes)"
  debootstrap --variant=minbase --include="${PACKAGES}" "${SUITE}" "${rootfs}" "${MIRROR}" >/dev/null
  # Same trimming as the official slim images: no apt lists, docs or caches.
  rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin \
    "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/*
  # Make apt inside the image use the same mirror the rootfs came from.
  printf 'deb %s %s main\n' "${MIRROR}" "${SUITE}" >"${rootfs}/etc/apt/sources.list"
  # python:3.12-slim puts `python` on PATH; builds rely on `python3` only, but users expect both.
  ln -sf python3 "${rootfs}/usr/bin/python"
  log "importing as ${TAG}"
  tar -C "${rootfs}" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    - "${TAG}" >/dev/null
  log "built ${TAG} ($(docker image inspect --format '{{.Size}}' "${TAG}" | awk '{printf "%.0f MB", $1/1e6}'))"
}

main "$@"
