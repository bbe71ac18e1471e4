#!/usr/bin/env bash
# The durable ledger at scale (issue 13): one `rulehost run` deciding
# TRANSACTIONS generated lines (default 10 000 000) onto one fresh SQLite
# ledger, release build, the example rule set. While it runs, every
# SAMPLE_SECONDS the script reads the process's resident set (VmRSS) and how
# far it has read its input (the file position in /proc/PID/fdinfo, turned
# into lines by the byte offset of every millionth line). It prints, per
# million lines: the time the mark was passed, the throughput over that
# million, and the RSS then. Then the file size per decision (after the
# run's final checkpoint), and the restart: wall time and peak RSS of opening
# the full ledger again and deciding nothing (median of ROUNDS).
#   scripts/bench-ledger-scale.sh   (TRANSACTIONS=10000000 ACCOUNTS=100000 ROUNDS=3 WORK=/tmp/…)
# The generated files (≈ 2.3 GB for 10 M lines) and the ledger (≈ 4 GB) are
# written under WORK (default: a temporary folder, removed at the end unless
# KEEP=1).
set -euo pipefail
cd "$(dirname "$0")/.."
transactions=${TRANSACTIONS:-10000000}
accounts=${ACCOUNTS:-100000}
rounds=${ROUNDS:-3}
sample=${SAMPLE_SECONDS:-2}
scripts/build-rules.sh >/dev/null
cargo build --quiet --release -p rulehost-cli
bin=$PWD/target/release/rulehost
work=${WORK:-$(mktemp -d)}
mkdir -p "$work"
if [ "${KEEP:-0}" != 1 ]; then trap 'rm -rf "$work"' EXIT; fi
input=$work/transactions.jsonl
if [ ! -f "$input" ] || [ "$(wc -l <"$input")" != "$transactions" ]; then
  echo "bench-ledger-scale: generating $transactions lines over $accounts accounts" >&2
  $bin gen --out "$work" --accounts "$accounts" --transactions "$transactions" 2>/dev/null
fi
cache=$work/cache
$bin check --rules examples/ruleset --cache-dir "$cache" >/dev/null
# Byte offset of the end of every millionth line.
LC_ALL=C awk '{ b += length($0) + 1 } NR % 1000000 == 0 { print NR, b }' "$input" >"$work/marks"
ledger=$work/ledger.sqlite
rm -f "$ledger" "$ledger"-*

/usr/bin/time -f "%e %M" -o "$work/run.time" \
  "$bin" run --rules examples/ruleset --accounts "$work/accounts.jsonl" --cache-dir "$cache" \
  --ledger "$ledger" --input "$input" --output /dev/null --quiet &
time_pid=$!
pid=
for _ in $(seq 100); do
  pid=$(pgrep -P "$time_pid" -x rulehost || true)
  [ -n "$pid" ] && break
  sleep 0.05
done
[ -n "$pid" ] || { echo "bench-ledger-scale: rulehost did not start" >&2; exit 1; }
start=$(date +%s.%N)
: >"$work/samples"
while kill -0 "$pid" 2>/dev/null; do
  fd=$(for f in /proc/"$pid"/fd/*; do
         if [ "$(readlink "$f" 2>/dev/null)" = "$input" ]; then basename "$f"; fi
       done | head -n1) || true
  if [ -n "$fd" ]; then
    pos=$(awk '/^pos:/ { print $2 }' /proc/"$pid"/fdinfo/"$fd" 2>/dev/null || true)
    rss=$(awk '/^VmRSS:/ { print $2 }' /proc/"$pid"/status 2>/dev/null || true)
    now=$(date +%s.%N)
    [ -n "$pos" ] && [ -n "$rss" ] && echo "$(echo "$now - $start" | bc) $pos $rss" >>"$work/samples"
  fi
  sleep "$sample"
done
wait "$time_pid" || [ $? -le 1 ] || { echo "bench-ledger-scale: run failed" >&2; exit 1; }
# (time(1) puts "Command exited with non-zero status" first when some lines were errors.)
read -r wall peak < <(tail -n1 "$work/run.time")

printf '%s lines over %s accounts, durable ledger; per million lines read:\n' "$transactions" "$accounts"
printf '%10s %9s %14s %9s\n' lines "at s" "tx/s (this M)" "RSS MiB"
# For each mark: the first sample at or past it (its time and RSS).
awk -v wall="$wall" 'NR == FNR { mark[NR] = $1; off[NR] = $2; n = NR; next }
     { t[FNR] = $1; p[FNR] = $2; r[FNR] = $3; m = FNR }
     END {
       j = 1; prev = 0
       for (i = 1; i <= n; i++) {
         while (j <= m && p[j] < off[i]) j++
         if (j > m) { if (i == n) printf "%10d %9.1f %14.0f %9s\n", mark[i], wall, 1000000 / (wall - prev), "(end)"; break }
         printf "%10d %9.1f %14.0f %9.0f\n", mark[i], t[j], 1000000 / (t[j] - prev), r[j] / 1024
         prev = t[j]
       }
     }' "$work/marks" "$work/samples"
size=$(stat -c %s "$ledger")
printf 'run: %.1f s wall, %.0f tx/s overall, peak RSS %d MiB\n' "$wall" \
  "$(echo "$transactions / $wall" | bc -l)" $((peak / 1024))
printf 'ledger file: %d bytes, %.0f bytes per decision\n' "$size" "$(echo "$size / $transactions" | bc -l)"
if command -v sqlite3 >/dev/null; then
  echo 'by table and index (bytes per decision):'
  sqlite3 -readonly "$ledger" "SELECT name, round(sum(pgsize) * 1.0 / $transactions, 1) FROM dbstat GROUP BY name ORDER BY 2 DESC" \
    2>/dev/null | sed 's/^/  /' || echo '  (sqlite3 without dbstat)'
fi

: >"$work/restart"
for _ in $(seq "$rounds"); do
  /usr/bin/time -f "%e %M" -o "$work/open.time" \
    "$bin" run --rules examples/ruleset --cache-dir "$cache" --ledger "$ledger" --input /dev/null \
    --output /dev/null --quiet
  tail -n1 "$work/open.time" >>"$work/restart"
done
sort -n "$work/restart" | awk '{ w[NR] = $1; r[NR] = $2 } END {
  i = int((NR + 1) / 2); printf "restart (open the ledger, decide nothing): %.2f s wall, %d MiB peak RSS (median of %d)\n", w[i], r[i] / 1024, NR }'
