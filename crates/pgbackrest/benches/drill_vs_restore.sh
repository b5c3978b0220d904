#!/usr/bin/env bash
# Benchmark: the restore drill against a bare `pgbackrest restore` + `pg_ctl start` of the
# same backup, on a ~1 GB cluster (pgbench scale 60), in one run; and backup throughput per
# repository (repo1 local posix, repo2 the sandbox's S3 server), both encrypted.
#
#   crates/pgbackrest/benches/drill_vs_restore.sh [SCALE] [ROUNDS]
#
# Target: drill total (restore + start + databases + fingerprint + pg_amcheck + cleanup)
# <= 1.2 x bare (restore + start until it accepts connections).
# Needs root (the servers run as postgres), pgbackrest, PostgreSQL 15 server and client tools,
# python3 (arithmetic).
set -euo pipefail
SCALE=${1:-60}
ROUNDS=${2:-2}
cd "$(dirname "$0")/../../.."
ROOT=$PWD
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

need() { command -v "$1" >/dev/null 2>&1 || [ -x "/usr/lib/postgresql/15/bin/$1" ]; }
if ! need pgbackrest || ! need pgbench; then
  echo "installing pgbackrest and postgresql-client" >&2
  apt-get install -y -q pgbackrest postgresql-client >/dev/null
fi
BIN=$(pg_config --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
[ -x "$BIN/pg_ctl" ] || BIN=/usr/lib/postgresql/15/bin

# The drill's time is spent in pgBackRest, PostgreSQL and pg_amcheck; a debug build of our
# binaries is enough (BENCH_PROFILE=release for an optimised one).
PROFILE=${BENCH_PROFILE:-debug}
if [ "$PROFILE" = release ]; then cargo build -q --release -p costplus -p costplus-backup
else cargo build -q -p costplus -p costplus-backup; fi
COSTPLUS=$CARGO_TARGET_DIR/$PROFILE/costplus
BACKUP=$CARGO_TARGET_DIR/$PROFILE/costplus-backup

WORK=$(mktemp -d /tmp/costplus-bench-XXXXXX)
chmod 755 "$WORK"
SB=$WORK/sb
cleanup() {
  [ -f "$WORK/bare/data/postmaster.pid" ] && su postgres -c "$BIN/pg_ctl -D $WORK/bare/data -m immediate stop" >/dev/null 2>&1 || true
  "$COSTPLUS" sandbox down --dir "$SB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

now() { date +%s.%N; }
secs() { python3 -c "print($2 - $1)"; }

echo "== sandbox" >&2
"$COSTPLUS" sandbox up --dir "$SB" >/dev/null
eval "$("$COSTPLUS" sandbox env --dir "$SB")"
CONF=$SB/pgbackrest/pgbackrest.conf

echo "== pgbench -i -s $SCALE" >&2
psql -XAtqc "CREATE DATABASE bench_db"
PGDATABASE=bench_db "$BIN/pgbench" -i -q -s "$SCALE" >/dev/null 2>&1
SIZE=$(psql -XAtqc "SELECT pg_database_size('bench_db')")
echo "bench_db: $((SIZE / 1024 / 1024)) MiB" >&2

echo "== backups" >&2
declare -A MBPS
for repo in 1 2; do
  out=$("$BACKUP" run --type full --repo $repo --format json)
  MBPS[$repo]=$(echo "$out" | sed -n 's/.*"mb_per_second": \([0-9.]*\).*/\1/p')
  LABEL[$repo]=$(echo "$out" | sed -n 's/.*"label": "\([^"]*\)".*/\1/p')
  echo "repo$repo: ${MBPS[$repo]} MB/s (${LABEL[$repo]})" >&2
done

bare_once() {
  local dir=$WORK/bare
  rm -rf "$dir"; mkdir -p "$dir/data" "$dir/run"; chown -R postgres:postgres "$dir"; chmod 700 "$dir/data"
  local port
  port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local t0 t1
  t0=$(now)
  su postgres -c "pgbackrest --config=$CONF --stanza=main restore --repo=1 --set=${LABEL[1]} \
      --pg1-path=$dir/data --archive-mode=off --type=immediate --target-action=promote \
      --process-max=2 --tablespace-map-all=$dir/ts" >/dev/null
  su postgres -c "$BIN/pg_ctl -D $dir/data -l $dir/server.log -w -t 3600 -s start \
      -o \"-p $port -c listen_addresses='' -c unix_socket_directories=$dir/run -c hot_standby=off -c logging_collector=off -c archive_mode=off\"" >/dev/null
  until "$BIN/pg_isready" -q -h "$dir/run" -p "$port"; do sleep 0.1; done
  t1=$(now)
  su postgres -c "$BIN/pg_ctl -D $dir/data -m fast -w -s stop" >/dev/null
  rm -rf "$dir"
  secs "$t0" "$t1"
}

drill_once() {
  local out
  out=$("$BACKUP" drill --repo 1 --set "${LABEL[1]}" --format json) || { echo "$out" >&2; exit 1; }
  echo "$out" | sed -n 's/.*"total_seconds": \([0-9.]*\).*/\1/p'
}

echo "== restore: bare vs drill ($ROUNDS rounds, order alternating)" >&2
# One warm-up of each so that no round pays for a cold repository alone.
bare_once >/dev/null; drill_once >/dev/null
BARE=(); DRILL=()
for i in $(seq "$ROUNDS"); do
  if [ $((i % 2)) = 1 ]; then
    b=$(bare_once); d=$(drill_once)
  else
    d=$(drill_once); b=$(bare_once)
  fi
  BARE+=("$b"); DRILL+=("$d")
  echo "round $i: bare ${b}s, drill ${d}s, ratio $(python3 -c "print(round($d / $b, 3))")" >&2
done
mean() { python3 -c "import sys; v=[float(x) for x in sys.argv[1:]]; print(sum(v)/len(v))" "$@"; }
B=$(mean "${BARE[@]}"); D=$(mean "${DRILL[@]}")
RATIO=$(python3 -c "print($D / $B)")
LAST=$("$BACKUP" history --format json | python3 -c 'import json,sys; r=json.load(sys.stdin)[-1]; print(json.dumps(r["timings"])); [print("  ", c["name"], c["status"], c["detail"][:120]) for c in r["checks"]]')
printf 'scale %s, database %s MiB\n' "$SCALE" "$((SIZE / 1024 / 1024))"
printf 'backup throughput: repo1 %s MB/s, repo2 %s MB/s\n' "${MBPS[1]}" "${MBPS[2]}"
printf 'bare restore+start: %.2fs   drill total: %.2fs   ratio %.3f (target <= 1.2)\n' "$B" "$D" "$RATIO"
printf 'last drill timings: %s\n' "$LAST"
