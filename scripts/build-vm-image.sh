#!/usr/bin/env bash
# Build the image of a fresh Debian "VM" that a Docker container stands in for: Debian 12
# (bookworm, the default) or Debian 13 (trixie), `--suite` chooses.
#
# The Ansible tests boot a few of these on one machine (tests/vms.py) and provision
# them over SSH as if they were real VMs: systemd as PID 1, sshd with host keys made at
# first boot, a sudo user `ops`, apt pointing at the mirror the way that release's own
# images write it, and no Docker engine (the role installs it). tests/vms.py says how they
# are run, and why that way.
# Idempotent: does nothing when the tag exists and was built by this very script (its
# sha256 is a label of the image), so editing the script rebuilds; --force always does.
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

SUITES=(bookworm trixie)
SUITE="bookworm"
MIRROR="${BASE_MIRROR:-http://deb.debian.org/debian}"
# Security updates, as on a real VM; set VM_SECURITY_MIRROR= (empty) for a mirror without them.
SECURITY_MIRROR="${VM_SECURITY_MIRROR-http://deb.debian.org/debian-security}"
# What a minimal cloud VM has that matters here: an init, sshd, Python for Ansible, sudo,
# `ip`, TLS roots and D-Bus for systemd; iptables for the firewall rules the role may add.
PACKAGES="systemd,systemd-sysv,dbus,openssh-server,python3,sudo,iproute2,ca-certificates,iptables"
LOGIN_USER="ops"
LOGIN_UID=1000
SCRIPT_LABEL="skfleet.vm-image.script-sha256"
# Units that cannot work in a container, or that would race Ansible for the dpkg lock.
MASKED_UNITS=(
  apt-daily.timer apt-daily.service apt-daily-upgrade.timer apt-daily-upgrade.service
  unattended-upgrades.service
  systemd-udevd.service systemd-udev-trigger.service systemd-udev-settle.service
  systemd-udevd-control.socket systemd-udevd-kernel.socket systemd-hwdb-update.service
  systemd-modules-load.service systemd-sysctl.service systemd-remount-fs.service
  systemd-firstboot.service systemd-journald-audit.socket
  systemd-binfmt.service proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount
  sys-kernel-config.mount sys-kernel-debug.mount sys-kernel-tracing.mount
  sys-fs-fuse-connections.mount dev-hugepages.mount dev-mqueue.mount
  getty.target console-getty.service getty@tty1.service
  e2scrub_all.timer e2scrub_reap.service fstrim.timer
)

usage() {
  cat <<USAGE
usage: $(basename "$0") [-h] [--force] [--suite ${SUITES[*]// /|}]
Builds skfleet/vm:SUITE (a Debian VM stand-in of that release, default ${SUITE}: systemd, sshd, sudo
user ${LOGIN_USER}) from ${MIRROR} with debootstrap and imports it into Docker. Skips when the tag was
built by this same script.
Environment: VM_TAG (another tag), BASE_MIRROR, VM_SECURITY_MIRROR. Needs root, debootstrap and a
running dockerd.
USAGE
}

script_sha256() { sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1; }

built_by_this_script() {
  local label
  label="$(docker image inspect --format "{{index .Config.Labels \"${SCRIPT_LABEL}\"}}" "${TAG}" 2>/dev/null)" || return 1
  [[ "${label}" == "$(script_sha256)" ]]
}

ensure_debootstrap() {
  command -v debootstrap >/dev/null 2>&1 && return
  log "installing debootstrap"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# Each release as its own images write it: Debian 12 one-line sources.list, Debian 13 deb822
# (debian.sources), so the fleet tries both formats on the roles.
write_apt_sources() {
  local rootfs="$1"
  if [[ "${SUITE}" == "bookworm" ]]; then
    {
      printf 'deb %s %s main\n' "${MIRROR}" "${SUITE}"
      printf 'deb %s %s-updates main\n' "${MIRROR}" "${SUITE}"
      if [[ -n "${SECURITY_MIRROR}" ]]; then
        printf 'deb %s %s-security main\n' "${SECURITY_MIRROR}" "${SUITE}"
      fi
    } >"${rootfs}/etc/apt/sources.list"
  else
    rm -f "${rootfs}/etc/apt/sources.list"
    {
      printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates\nComponents: main\n' "${MIRROR}" "${SUITE}" "${SUITE}"
      printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
      if [[ -n "${SECURITY_MIRROR}" ]]; then
        printf '\nTypes: deb\nURIs: %s\nSuites: %s-security\nComponents: main\n' "${SECURITY_MIRROR}" "${SUITE}"
        printf 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg\n'
      fi
    } >"${rootfs}/etc/apt/sources.list.d/debian.sources"
  fi
  # No translations: a third less to download at every `apt-get update` of every VM.
  printf 'Acquire::Languages "none";\n' >"${rootfs}/etc/apt/apt.conf.d/99no-translations"
  rm -f "${rootfs}"/var/lib/apt/lists/*_i18n_Translation-*
  # debootstrap leaves partial/ to root; apt downloads as _apt (else: "unsandboxed" warning).
  chroot "${rootfs}" chown _apt:root /var/lib/apt/lists/partial
  # Lists that match the sources, so `apt-get install` works at boot even before an update.
  chroot "${rootfs}" apt-get update -qq
}

# PID 1: Docker mounts the cgroup v1 hierarchies read-only in an unprivileged container.
# systemd copes, a nested dockerd does not (mkdir /sys/fs/cgroup/cpuset/docker: read-only
# file system). The cgroup namespace is private, so read-write only exposes our own subtree.
# On a cgroup v1 host, Debian 13's systemd (257) refuses to boot unless the kernel command
# line says SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1; in a container, PID 1's own arguments are
# that command line. Debian 12's systemd ignores the word.
write_init_wrapper() {
  local rootfs="$1"
  cat >"${rootfs}/usr/local/sbin/vm-init" <<'INIT'
#!/bin/sh
# PID 1 of the skfleet test VM: make the cgroup hierarchies writable, then become systemd.
set -eu
cgroup_mounts=""
while read -r _source mountpoint fstype _rest; do
  case "${fstype}" in
    cgroup | cgroup2) cgroup_mounts="${cgroup_mounts} ${mountpoint}" ;;
  esac
done </proc/self/mounts
# A bind remount changes only this mount's read-only flag: a plain remount would change the
# hierarchy itself, which the host shares, and fails with "mount point is busy".
for mountpoint in ${cgroup_mounts}; do
  mount -o remount,bind,rw "${mountpoint}" || echo "vm-init: cannot make ${mountpoint} read-write" >&2
done
if [ "$(stat -fc %T /sys/fs/cgroup)" != cgroup2fs ]; then
  set -- "$@" SYSTEMD_CGROUP_ENABLE_LEGACY_FORCE=1
fi
exec /sbin/init "$@"
INIT
  chmod 0755 "${rootfs}/usr/local/sbin/vm-init"
}

# Debian makes host keys when openssh-server is installed, so every container of the image
# would share them; instead each VM makes its own before sshd first starts.
write_ssh_setup() {
  local rootfs="$1"
  rm -f "${rootfs}"/etc/ssh/ssh_host_*
  cat >"${rootfs}/etc/systemd/system/ssh-host-keys.service" <<'UNIT'
[Unit]
Description=Generate SSH host keys on first boot
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key
Before=ssh.service

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -A
RemainAfterExit=yes

[Install]
WantedBy=ssh.service
UNIT
  mkdir -p "${rootfs}/etc/systemd/system/ssh.service.wants"
  ln -sf ../ssh-host-keys.service "${rootfs}/etc/systemd/system/ssh.service.wants/ssh-host-keys.service"
  printf '# skfleet test VM: keys only, as on a cloud VM.\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n' \
    >"${rootfs}/etc/ssh/sshd_config.d/skfleet.conf"
}

write_login_user() {
  local rootfs="$1"
  chroot "${rootfs}" useradd --create-home --uid "${LOGIN_UID}" --shell /bin/bash "${LOGIN_USER}"
  # '*' rather than useradd's '!': no password login, and not a "locked" account to sshd.
  chroot "${rootfs}" usermod --password '*' "${LOGIN_USER}"
  printf '%s ALL=(ALL) NOPASSWD:ALL\n' "${LOGIN_USER}" >"${rootfs}/etc/sudoers.d/${LOGIN_USER}"
  chmod 0440 "${rootfs}/etc/sudoers.d/${LOGIN_USER}"
  install -d -m 0700 "${rootfs}/home/${LOGIN_USER}/.ssh"
  chroot "${rootfs}" chown -R "${LOGIN_USER}:${LOGIN_USER}" "/home/${LOGIN_USER}"
}

mask_container_units() {
  local rootfs="$1" unit
  for unit in "${MASKED_UNITS[@]}"; do
    ln -sf /dev/null "${rootfs}/etc/systemd/system/${unit}"
  done
}

make_fresh() {
  local rootfs="$1"
  # Empty: systemd makes a new one at each VM's first boot (ids must differ between VMs).
  : >"${rootfs}/etc/machine-id"
  ln -sf /etc/machine-id "${rootfs}/var/lib/dbus/machine-id"
  printf 'LANG=C.UTF-8\n' >"${rootfs}/etc/default/locale"
  rm -rf "${rootfs}"/var/cache/apt/*.bin "${rootfs}"/var/cache/apt/archives/*.deb \
    "${rootfs}"/usr/share/doc/* "${rootfs}"/usr/share/man/* "${rootfs}"/usr/share/info/* \
    "${rootfs}"/var/log/*.log "${rootfs}"/var/log/apt/* "${rootfs}"/tmp/* "${rootfs}"/root/.bash_history
}

import_image() {
  local rootfs="$1" rootfs_tag="skfleet-vm-rootfs:$$" output
  tar -C "${rootfs}" -c . | docker import - "${rootfs_tag}" >/dev/null
  # `docker import --change` refuses STOPSIGNAL on Docker 20.10 ("not a valid change
  # command"), so the image's settings go on in a one-line build on top of the rootfs.
  # Output only on failure: the legacy builder's deprecation notice is noise here.
  if ! output="$(docker build --quiet --tag "${TAG}" - 2>&1 <<DOCKERFILE
FROM ${rootfs_tag}
ENV container=docker LANG=C.UTF-8
LABEL ${SCRIPT_LABEL}="$(script_sha256)" org.opencontainers.image.description="skfleet test VM: Debian ${SUITE}, systemd, sshd, sudo user ${LOGIN_USER}"
STOPSIGNAL SIGRTMIN+3
CMD ["/usr/local/sbin/vm-init"]
DOCKERFILE
  )"; then
    die "docker build on the imported rootfs failed: ${output}"
  fi
  docker rmi "${rootfs_tag}" >/dev/null
}

cleanup() {
  # --one-file-system: a debootstrap killed midway can leave /proc or /sys mounted inside.
  [[ -n "${ROOTFS:-}" ]] && rm -rf --one-file-system "${ROOTFS}"
  docker rmi "skfleet-vm-rootfs:$$" >/dev/null 2>&1 || true
}

main() {
  local force=0 previous_id started="${SECONDS}"
  while [[ $# -gt 0 ]]; do
    case "$1" in
      -h | --help) usage; exit 0 ;;
      --force) force=1 ;;
      --suite)
        [[ " ${SUITES[*]} " == *" ${2:-} "* ]] || die "--suite: one of ${SUITES[*]}, not '${2:-}'"
        SUITE="$2"
        shift
        ;;
      *) usage >&2; exit 2 ;;
    esac
    shift
  done
  TAG="${VM_TAG:-skfleet/vm:${SUITE}}"
  [[ "$(id -u)" -eq 0 ]] || die "needs root (debootstrap, chroot)"
  docker info >/dev/null 2>&1 || die "no running Docker engine: run 'scripts/install-docker.sh' once"
  if [[ "${force}" -eq 0 ]] && built_by_this_script; then
    log "${TAG} already built by this script"
    return
  fi
  previous_id="$(docker image inspect --format '{{.Id}}' "${TAG}" 2>/dev/null || true)"
  ensure_debootstrap
  ROOTFS="$(mktemp -d /var/tmp/skfleet-vm-rootfs.XXXXXX)"
  trap cleanup EXIT
  # mktemp makes it 0700: as the chroot's / it would keep apt's _apt user out of its lists.
  chmod 0755 "${ROOTFS}"
  log "debootstrap ${SUITE} from ${MIRROR} (about 2 minutes)"
  debootstrap --variant=minbase --include="${PACKAGES}" "${SUITE}" "${ROOTFS}" "${MIRROR}" >/dev/null
  write_apt_sources "${ROOTFS}"
  write_init_wrapper "${ROOTFS}"
  write_ssh_setup "${ROOTFS}"
  write_login_user "${ROOTFS}"
  mask_container_units "${ROOTFS}"
  make_fresh "${ROOTFS}"
  log "importing as ${TAG}"
  import_image "${ROOTFS}"
  # The image this one replaces was ours; drop it unless a VM still runs on it.
  if [[ -n "${previous_id}" && "${previous_id}" != "$(docker image inspect --format '{{.Id}}' "${TAG}")" ]]; then
    docker rmi "${previous_id}" >/dev/null 2>&1 || log "kept the previous ${previous_id:7:12}: still in use"
  fi
  log "built ${TAG} ($(docker image inspect --format '{{.Size}}' "${TAG}" | awk '{printf "%.0f MB", $1/1e6}')," \
    "$((SECONDS - started)) s)"
}

main "$@"
