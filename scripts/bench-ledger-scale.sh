#!/usr/bin/env bash
# The durable ledger at scale (issue 13): one `rulehost run` deciding
# TRANSACTIONS generated lines (default 10 000 000) onto one fresh SQLite
# ledger, release build, the example rule set. While it runs, every
# SAMPLE_SECONDS the script reads the process's resident set (VmRSS) and how
# far it has read its input (the file position in /proc/PID/fdinfo, turned
# into lines by the byte offset of every millionth line). It prints, per
# million lines: the time the mark was passed, the throughput over that
# million, and the RSS then (whole, anonymous, file-backed). To attribute
# the memory it also prints the ledger's own accounting over the run (the
# `rulehost::usage` debug log: pending holds, history, cached decisions,
# their bytes, and SQLite's heap) and, at each million, the resident
# anonymous memory by kind of mapping (/proc/PID/smaps). Then the file size per decision (after the
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
LC_ALL=C awk '{ b += length($0) + 1 } NR % 1000000 == 0 { printf "%d %.0f\n", NR, b }' "$input" >"$work/marks"
ledger=$work/ledger.sqlite
rm -f "$ledger" "$ledger"-*

RUST_LOG=warn,rulehost::usage=debug /usr/bin/time -f "%e %M" -o "$work/run.time" \
  "$bin" --log-format json run --rules examples/ruleset --accounts "$work/accounts.jsonl" --cache-dir "$cache" \
  --ledger "$ledger" --input "$input" --output /dev/null --quiet 2>"$work/run.log" &
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
next_mark=1
while kill -0 "$pid" 2>/dev/null; do
  fd=$(for f in /proc/"$pid"/fd/*; do
         if [ "$(readlink "$f" 2>/dev/null)" = "$input" ]; then basename "$f"; fi
       done | head -n1) || true
  if [ -n "$fd" ]; then
    pos=$(awk '/^pos:/ { print $2 }' /proc/"$pid"/fdinfo/"$fd" 2>/dev/null || true)
    # VmRSS, RssAnon (heaps), RssFile (mapped files: the binary, libraries).
    rss=$(awk '/^(VmRSS|RssAnon|RssFile):/ { printf "%s ", $2 }' /proc/"$pid"/status 2>/dev/null || true)
    now=$(date +%s.%N)
    [ -n "$pos" ] && [ -n "$rss" ] && echo "$(echo "$now - $start" | bc) $pos $rss" >>"$work/samples"
    # At each million: where the resident memory is, by mapping.
    mark_off=$(awk -v i="$next_mark" 'NR == i { print $2 }' "$work/marks")
    if [ -n "$pos" ] && [ -n "$mark_off" ] && [ "$pos" -ge "$mark_off" ]; then
      cp /proc/"$pid"/smaps "$work/smaps.$next_mark" 2>/dev/null || true
      next_mark=$((next_mark + 1))
    fi
  fi
  sleep "$sample"
done
wait "$time_pid" || [ $? -le 1 ] || { echo "bench-ledger-scale: run failed" >&2; exit 1; }
# (time(1) puts "Command exited with non-zero status" first when some lines were errors.)
read -r wall peak < <(tail -n1 "$work/run.time")

printf '%s lines over %s accounts, durable ledger; per million lines read:\n' "$transactions" "$accounts"
printf '%10s %9s %14s %9s %9s %9s\n' lines "at s" "tx/s (this M)" "RSS MiB" "anon MiB" "file MiB"
# For each mark: the first sample at or past it (its time and RSS).
awk -v wall="$wall" 'NR == FNR { mark[NR] = $1; off[NR] = $2; n = NR; next }
     { t[FNR] = $1; p[FNR] = $2; r[FNR] = $3; a[FNR] = $4; f[FNR] = $5; m = FNR }
     END {
       j = 1; prev = 0
       for (i = 1; i <= n; i++) {
         while (j <= m && p[j] < off[i]) j++
         # The last mark falls after the last sample: the run's end, with the last sample's RSS.
         if (j > m) { if (i == n) printf "%10d %9.1f %14.0f %9.0f %9.0f %9.0f  (end; RSS: the last sample, at %.1f s)\n", mark[i], wall, 1000000 / (wall - prev), r[m] / 1024, a[m] / 1024, f[m] / 1024, t[m]; break }
         printf "%10d %9.1f %14.0f %9.0f %9.0f %9.0f\n", mark[i], t[j], 1000000 / (t[j] - prev), r[j] / 1024, a[j] / 1024, f[j] / 1024
         prev = t[j]
       }
     }' "$work/marks" "$work/samples"
echo 'the ledger'"'"'s own accounting (every USAGE_LOG_INTERVAL; MiB): seconds, pending holds, history entries, cached decisions, ledger bytes, SQLite heap'
grep -o '"fields":{[^}]*"message":"ledger memory"[^}]*}' "$work/run.log" |
  sed -E 's/.*"seconds":([0-9]+).*"pending_holds":([0-9]+).*"history_entries":([0-9]+).*"decisions_cached":([0-9]+).*"ledger_bytes":([0-9]+).*"sqlite_heap_bytes":([0-9]+).*/\1 \2 \3 \4 \5 \6/' |
  awk 'NR % 6 == 1 { printf "  %6d s %8d %9d %7d %8.1f %8.1f\n", $1, $2, $3, $4, $5 / 1048576, $6 / 1048576 }'
echo 'resident anonymous memory by mapping at each million (MiB): [heap] (glibc main arena), mappings < 32 MiB (glibc thread arenas: SQLite; stacks), >= 32 MiB (mimalloc: the Rust heap)'
for f in "$work"/smaps.*; do
  [ -f "$f" ] || continue
  awk -v m="${f##*.}" '/^[0-9a-f]+-[0-9a-f]+ / { name = $6; next }
       /^Size:/ { size = $2 / 1024 }
       /^Anonymous:/ { kb = $2; if (name == "[heap]") h += kb; else if (name == "" && size < 32) s += kb; else if (name == "") l += kb }
       END { printf "  %2d M: [heap] %6.1f   < 32 MiB %6.1f   >= 32 MiB %6.1f\n", m, h / 1024, s / 1024, l / 1024 }' "$f"
done | sort -n -k1
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
