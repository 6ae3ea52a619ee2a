#!/usr/bin/env bash
# skfleet-worker [DASK WORKER OPTIONS...]: `dask worker` whose memory limit sits below its container's.
# The one worker launcher: Compose's workers (compose/compose.yaml) and the VMs' (the Ansible role
# dask_worker) both run it, so a worker option or the memory rule is written here once.
#
# Docker's memory limit is a wall: the kernel kills a process of the container, without a word,
# the moment the container reaches it. Dask's own limit (--memory-limit) is where Dask spills,
# pauses (80 %) and restarts the worker (95 %) and says so in its log. Dask's limit must
# therefore sit below the container's by at least what the nanny and the interpreter take.
# Compose can't compute, so the container's limit is the one setting (SKFLEET_WORKER_MEMORY_LIMIT)
# and this script gives Dask that limit less the headroom: a tenth, and at least 256 MiB, split
# evenly between the processes of `--nworkers N` (one process without it, as in Compose).
#
# With --memory-limit among the options, or in a container without a memory limit, it runs
# `dask worker` as it is.
set -euo pipefail

MIN_HEADROOM=$((256 * 1024 * 1024))

log() { printf '[skfleet-worker] %s\n' "$*" >&2; }

# The container's memory limit in bytes (cgroup v2, else v1), or nothing when there is none.
container_limit() {
  local value=""
  if [[ -r /sys/fs/cgroup/memory.max ]]; then
    value="$(cat /sys/fs/cgroup/memory.max)"
  elif [[ -r /sys/fs/cgroup/memory/memory.limit_in_bytes ]]; then
    value="$(cat /sys/fs/cgroup/memory/memory.limit_in_bytes)"
  fi
  local total
  total=$(($(sed -n 's/^MemTotal: *\([0-9]*\) kB$/\1/p' /proc/meminfo) * 1024))
  # "max", or v1's "unlimited" (a huge number): no limit below the machine's memory.
  if [[ "${value}" =~ ^[0-9]+$ ]] && ((value < total)); then
    printf '%s' "${value}"
  fi
}

processes=1
previous=""
for argument in "$@"; do
  if [[ "${argument}" == --memory-limit || "${argument}" == --memory-limit=* ]]; then
    exec dask worker "$@"
  fi
  if [[ "${previous}" == --nworkers ]]; then
    processes="${argument}"
  elif [[ "${argument}" == --nworkers=* ]]; then
    processes="${argument#--nworkers=}"
  fi
  previous="${argument}"
done
limit="$(container_limit)"
if [[ -z "${limit}" ]]; then
  exec dask worker "$@"
fi
if ! [[ "${processes}" =~ ^[1-9][0-9]*$ ]]; then
  log "error: --nworkers ${processes}: give a number of processes, so that the container's memory (${limit} bytes) can be split between them"
  exit 2
fi
headroom=$((limit / 10 > MIN_HEADROOM ? limit / 10 : MIN_HEADROOM))
if ((limit <= 2 * headroom)); then
  log "error: the container's memory limit (${limit} bytes) leaves no room for a worker: give it more than 512MiB"
  exit 2
fi
exec dask worker --memory-limit "$(((limit - headroom) / processes))" "$@"
