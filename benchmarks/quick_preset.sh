#!/usr/bin/env bash
# Times `sparsetrain bench --preset quick` (then `sparsetrain report`) from an empty folder.
# Wall time and CPU time (user + sys, children included) come from GNU time; on a shared
# machine compare CPU time / cores with the wall time to see the contention.
# Usage: benchmarks/quick_preset.sh [OUT]   (default OUT: runs/quick-timing; it is deleted first)
set -euo pipefail
out="${1:-runs/quick-timing}"
rm -rf "$out"
echo "start $(date -u +%FT%TZ) on $(nproc) cores, load: $(cut -d' ' -f1-3 /proc/loadavg)"
/usr/bin/time -f "bench: wall %e s, user %U s, sys %S s, max RSS %M KB" \
    python -m sparsetrain.cli bench --preset quick --out "$out"
echo "end $(date -u +%FT%TZ), load: $(cut -d' ' -f1-3 /proc/loadavg)"
python -m sparsetrain.cli report --out "$out" --html "$out/report.html" > "$out/report.txt"
echo "report: $out/report.html, table: $out/report.txt"
