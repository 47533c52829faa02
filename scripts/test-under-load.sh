#!/usr/bin/env bash
# Run the whole suite N times in a row (default 3) while a CPU hog, two busy loops, keeps
# both cores of a 2-core machine busy: the suite must not depend on an idle machine.
# Prints each run's time and result; exits non-zero if any run failed.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-3}

hogs=()
stop_hogs() {
  for pid in "${hogs[@]}"; do kill "$pid" 2>/dev/null; done
  wait "${hogs[@]}" 2>/dev/null
}
trap stop_hogs EXIT
for _ in 1 2; do
  sh -c 'while :; do :; done' &
  hogs+=("$!")
done
echo "test-under-load: CPU hog running (PIDs ${hogs[*]}); $runs runs of make test"

failed=0
for run in $(seq 1 "$runs"); do
  start=$(date +%s)
  if make test >"/tmp/operator-test-under-load-$run.log" 2>&1; then result=passed; else
    result=FAILED
    failed=1
  fi
  summary=$(grep -E '^=+ .*(passed|failed).* =+$' "/tmp/operator-test-under-load-$run.log" | tail -1)
  echo "run $run: $result in $(($(date +%s) - start)) s: $summary"
done
exit $failed
