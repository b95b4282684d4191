#!/usr/bin/env bash
# Run the fault drills matching K again and again, to catch a rare failure or a worker's own restart:
#   tests/drills/loop.sh [-k EXPR] [-n RUNS]      (make drills-loop K=two_workers N=20)
# One line per run in var/drill-loop/summary.txt; the logs of a run that failed or warned (a worker
# that restarted itself: haochaping/liveness.py) are kept in var/drill-loop/runN/.
set -u
K=two_workers
N=20
while getopts "k:n:" opt; do
  case $opt in
    k) K=$OPTARG ;;
    n) N=$OPTARG ;;
    *) echo "usage: $0 [-k EXPR] [-n RUNS]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/../.."
out=var/drill-loop
mkdir -p "$out"
for i in $(seq 1 "$N"); do
  started=$(date +%s)
  rm -rf var/drills
  .venv/bin/python -m pytest tests/drills -m drill -k "$K" -p no:cacheprovider -q > "$out/run$i.txt" 2>&1
  rc=$?
  kept=""
  if [ $rc -ne 0 ] || grep -q "UserWarning" "$out/run$i.txt"; then
    cp -r var/drills "$out/run$i" 2>/dev/null
    kept=" (logs in $out/run$i)"
  fi
  echo "run $i rc=$rc $(( $(date +%s) - started ))s load=$(cut -d' ' -f1 /proc/loadavg) $(tail -1 "$out/run$i.txt")$kept" | tee -a "$out/summary.txt"
done
