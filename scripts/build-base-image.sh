#!/usr/bin/env bash
# Build a Python base image offline from a Debian mirror (debootstrap + docker import).
#
# For hosts that cannot reach a container registry (air-gapped networks, our CI): the
# result stands in for python:3.12-slim. Pass it to the build as BASE_IMAGE (see .env).
# Idempotent: does nothing when the tag exists and was built by this very script (its sha256 is
# a label of the image), so editing the script rebuilds; --force always does.
set -euo pipefail

SUITE="${BASE_SUITE:-bookworm}"
MIRROR="${BASE_MIRROR:-http://deb.debian.org/debian}"
TAG="${BASE_TAG:-skfleet/base:${SUITE}}"
# What the images need from the OS: Python with venv, CA certificates for pip, and
# the OpenMP runtime scikit-learn's wheels load.
PACKAGES="python3,python3-venv,ca-certificates,libgomp1"
SCRIPT_LABEL="skfleet.base-image.script-sha256"

usage() {
  cat <<USAGE
usage: $(basename "$0") [-h] [--force]
Builds ${TAG} from ${MIRROR} (${SUITE}) with debootstrap and imports it into Docker.
Environment: BASE_SUITE, BASE_MIRROR, BASE_TAG. Needs root, debootstrap and a running dockerd.
USAGE
}

log() { printf '[build-base-image] %s\n' "$*"; }

script_sha256() { sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; }

built_by_this_script() {
  local label
  label="$(docker image inspect --format "{{index .Config.Labels \"${SCRIPT_LABEL}\"}}" "${TAG}" 2>/dev/null)" || return 1
  [[ "${label}" == "$(script_sha256)" ]]
}

main() {
  local force=0
  case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    --force) force=1 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
  esac
  if [[ "${force}" -eq 0 ]] && built_by_this_script; then
    log "${TAG} already built by this script"
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
  # Same trimming as the official slim images: no apt lists, downloaded packages, docs,
  # manuals or translations, the licences kept (45 MB of .deb files and 33 MB of message catalogues), and dpkg
  # told to leave them out of whatever a later stage installs.
  rm -rf "${rootfs}"/var/lib/apt/lists/* "${rootfs}"/var/cache/apt/*.bin "${rootfs}"/var/cache/apt/archives/*.deb \
    "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/*
  find "${rootfs}/usr/share/doc" -type f ! -name copyright -delete
  find "${rootfs}/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
  # What no image runs: glibc's converters of legacy charsets (8 MB; the images speak C.UTF-8, whose
  # conversions glibc has built in, and Python has its own codecs), the system's time zone files
  # (4 MB; Python falls back to the tzdata package, which pandas brings, and dateutil carries its
  # own), and Python's 2to3, help() topics and regression-test helpers.
  rm -rf "${rootfs}"/usr/lib/*-linux-gnu/gconv "${rootfs}"/usr/share/zoneinfo \
    "${rootfs}"/usr/lib/python3.*/lib2to3 "${rootfs}"/usr/lib/python3.*/pydoc_data "${rootfs}"/usr/lib/python3.*/test
  cat >"${rootfs}/etc/dpkg/dpkg.cfg.d/skfleet-slim" <<'DPKG'
# skfleet's base image (scripts/build-base-image.sh): no docs, manuals or translations.
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
DPKG
  # Make apt inside the image use the same mirror the rootfs came from.
  printf 'deb %s %s main\n' "${MIRROR}" "${SUITE}" >"${rootfs}/etc/apt/sources.list"
  # python:3.12-slim puts `python` on PATH; builds rely on `python3` only, but users expect both.
  ln -sf python3 "${rootfs}/usr/bin/python"
  log "importing as ${TAG}"
  tar -C "${rootfs}" -c . | docker import \
    --change 'ENV LANG=C.UTF-8' \
    --change 'CMD ["/bin/bash"]' \
    --change "LABEL ${SCRIPT_LABEL}=$(script_sha256)" \
    - "${TAG}" >/dev/null
  log "built ${TAG} ($(docker image inspect --format '{{.Size}}' "${TAG}" | awk '{printf "%.0f MB", $1/1e6}'))"
}

main "$@"
