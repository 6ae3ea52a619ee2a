#!/usr/bin/env bash
# skfleet-as-owner FOLDER COMMAND...: run COMMAND as the owner of FOLDER, a host folder mounted
# into the container (the trainer's /output, the notebook's /work/notebooks), never as root.
#
# So that `docker compose up` leaves files owned by whoever ran it, whatever their uid, without
# a step to run first. The container starts as root with four capabilities, for this script and
# dumb-init alone: CHOWN (hand the folder Docker made to its owner, and root's files back to
# root), SETUID and SETGID (become that owner), KILL (dumb-init, still root, passes signals on
# to COMMAND). COMMAND runs with none of them: a change of uid away from 0 clears the capability
# sets, and no-new-privileges keeps them from coming back.
#
# Who the owner is, first match:
#   1. SKFLEET_UID (and SKFLEET_GID, default the same number), when set;
#   2. the owner of FOLDER, unless that is root;
#   3. the owner of the checkout: Compose mounts one of its files at /run/skfleet/checkout
#      (Docker makes a missing bind-mounted folder as root, so FOLDER's owner can't tell);
#   4. root.
# An owner other than root: COMMAND runs as that uid and gid; FOLDER, when Docker just made it
# (root's, empty), is handed to them first. Root: COMMAND runs as the image's user (10001)
# with group 0, FOLDER gets group write, and whatever COMMAND wrote there is given back to
# root (group-writable) when it ends. Started as non-root already (`docker run --user`), it only runs COMMAND.
set -euo pipefail

IMAGE_UID=10001
CHECKOUT_FILE=/run/skfleet/checkout

log() { printf '[skfleet-as-owner] %s\n' "$*" >&2; }

if [[ $# -lt 2 || "$1" == "-h" || "$1" == "--help" ]]; then
  sed -n '2,20s/^# \{0,1\}//p' "$0" >&2
  exit 2
fi
folder="$1"
shift
if [[ "$(id -u)" -ne 0 ]]; then
  exec "$@"
fi

if [[ -n "${SKFLEET_UID:-}" ]]; then
  owner="${SKFLEET_UID}:${SKFLEET_GID:-${SKFLEET_UID}}"
elif [[ -d "${folder}" && "$(stat -c %u "${folder}")" != 0 ]]; then
  owner="$(stat -c %u:%g "${folder}")"
elif [[ -e "${CHECKOUT_FILE}" ]]; then
  owner="$(stat -c %u:%g "${CHECKOUT_FILE}")"
else
  owner=0:0
fi
uid="${owner%%:*}"
gid="${owner##*:}"
[[ "${uid}" =~ ^[0-9]+$ && "${gid}" =~ ^[0-9]+$ ]] || { log "error: SKFLEET_UID/SKFLEET_GID must be numbers, got ${owner}"; exit 2; }

if [[ "${uid}" -ne 0 ]]; then
  if [[ -d "${folder}" && "$(stat -c %u "${folder}")" == 0 && -z "$(ls -A "${folder}")" ]]; then
    chown -h "${uid}:${gid}" "${folder}"
  fi
  exec setpriv --reuid="${uid}" --regid="${gid}" --clear-groups -- "$@"
fi

# Root ran Compose: COMMAND as the image's user, in group 0 to write into root's folder.
if [[ -d "${folder}" && "$(stat -c %u "${folder}")" == 0 ]]; then
  chmod g+rwx "${folder}"
fi
# dumb-init sends signals to the whole process group: COMMAND gets them itself, and this shell
# outlives them to hand the files back. COMMAND runs in the foreground: a background job of a
# shell without job control would ignore SIGINT, and Python then never sees Ctrl-C, or the
# interrupt the trainer raises in itself to end a search that can't go on.
trap ':' HUP INT QUIT TERM
status=0
setpriv --reuid="${IMAGE_UID}" --regid=0 --clear-groups -- "$@" || status=$?
# Root's again, and still writable by group 0, so the next run can go on with them (a
# checkpoint it appends to, a folder it removes). One at a time, so that a folder is root's
# before find looks inside it (the trainer makes some 0700). chown -h: a link swapped in for a
# file between find and chown is changed itself, never what it points to.
if [[ -d "${folder}" ]]; then
  find "${folder}" -xdev -user "${IMAGE_UID}" \( -type f -o -type d \) \
    -exec chown -h 0:0 {} \; -exec chmod g+rwX {} \; \
    || log "could not give all of ${folder}'s new files to root"
fi
exit "${status}"
