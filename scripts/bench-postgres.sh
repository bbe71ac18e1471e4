#!/usr/bin/env bash
# Durable throughput of `rulehost run` on the SQLite default, on PostgreSQL
# with one host, and with two hosts each owning half of the 64 partitions
# (the input split by partition, as a router in front would send it), all on
# this machine: the hosts and the database share its cores. PostgreSQL 15
# runs with fsync on (durable commits) in a temporary folder, as the
# `postgres` user when run as root. Medians of ROUNDS runs.
#   scripts/bench-postgres.sh [TRANSACTIONS=100000] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-100000}
rounds=${2:-3}
pg=${RULEHOST_PG_BIN:-/usr/lib/postgresql/15/bin}
scripts/build-rules.sh >/dev/null
cargo build --quiet --release -p rulehost-cli
bin=$PWD/target/release/rulehost
work=$(mktemp -d)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$work"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
trap 'as_pg "$pg/pg_ctl" -D "$work/data" -m immediate -s stop >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
as_pg "$pg/initdb" -D "$work/data" -U rulehost --auth=trust -E UTF8 --locale=C.UTF-8 -N >/dev/null
as_pg "$pg/pg_ctl" -D "$work/data" -l "$work/pg.log" -w -s \
  -o "-c listen_addresses=127.0.0.1 -c port=$port -c unix_socket_directories= -c fsync=on -c synchronous_commit=on" start
mkdir -p "$work/in" && chmod 777 "$work/in"
$bin gen --out "$work/in" --accounts 2000 --transactions "$n" --seed 42 2>/dev/null
# Split the stream by partition (rulehost::partition: SHA-256 bytes 8..16, mod 64).
python3 - "$work/in" <<'PY'
import hashlib, json, sys
d = sys.argv[1]
halves = [open(f"{d}/half-{h}.jsonl", "w") for h in (0, 1)]
for line in open(f"{d}/transactions.jsonl"):
    try:
        source = json.loads(line).get("source")
    except ValueError:
        source = None
    if not isinstance(source, str):
        halves[0].write(line)
        continue
    p = int.from_bytes(hashlib.sha256(source.encode()).digest()[8:16], "big") % 64
    halves[0 if p < 32 else 1].write(line)
PY
url() { echo "postgres://rulehost@127.0.0.1:$port/$1"; }
seconds() { python3 -c 'import sys; print(f"{float(sys.argv[2]) - float(sys.argv[1]):.3f}")' "$@"; }
now() { date +%s.%N; }
median() { sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
run() { $bin run --quiet --rules examples/ruleset --cache-dir "$work/cache" --output /dev/null "$@" || [ $? -le 1 ]; }
echo "rulehost run, $n generated lines, example rule set, $(nproc) cores shared with PostgreSQL (fsync on); median of $rounds"
for config in sqlite pg1 pg2; do
  rates=()
  for r in $(seq "$rounds"); do
    db=bench_${config}_$r
    case $config in
      sqlite)
        t0=$(now); run --accounts "$work/in/accounts.jsonl" --input "$work/in/transactions.jsonl" --ledger "$work/$db.sqlite"; t1=$(now) ;;
      pg1)
        as_pg "$pg/createdb" -h 127.0.0.1 -p "$port" -U rulehost "$db"
        $bin ledger import "$work/in/accounts.jsonl" --ledger "$(url "$db")" 2>/dev/null
        t0=$(now); run --input "$work/in/transactions.jsonl" --ledger "$(url "$db")"; t1=$(now) ;;
      pg2)
        as_pg "$pg/createdb" -h 127.0.0.1 -p "$port" -U rulehost "$db"
        $bin ledger import "$work/in/accounts.jsonl" --ledger "$(url "$db")" 2>/dev/null
        t0=$(now)
        run --input "$work/in/half-0.jsonl" --ledger "$(url "$db")" --partitions 0-31 --host-name a &
        a=$!
        run --input "$work/in/half-1.jsonl" --ledger "$(url "$db")" --partitions 32-63 --host-name b
        wait $a
        t1=$(now) ;;
    esac
    rates+=("$(python3 -c "print(round($n / ($t1 - $t0)))")")
  done
  label=$(case $config in sqlite) echo "SQLite (embedded default), one host";; pg1) echo "PostgreSQL, one host";; pg2) echo "PostgreSQL, two hosts (32 partitions each)";; esac)
  printf '%-46s %8s tx/s   (rounds: %s)\n' "$label" "$(printf '%s\n' "${rates[@]}" | median)" "${rates[*]}"
done
