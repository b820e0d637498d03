#!/usr/bin/env bash
# Benchmarks of iDaaS pipelines, side by side with the databases' own replication and loaders, in one run:
#
#   MariaDB (bench/run.sh without --pg):
#   1. CDC drain: a sysbench oltp_write_only backlog on the source, drained by the iDaaS pipeline, then by a
#      native replica (one SQL thread, MariaDB's default) and by a native parallel replica (4 threads,
#      optimistic), one after the other;
#   2. end-to-end latency of single-row changes at a steady 5,000 row changes/s (iDaaS and the replicas);
#   3. initial load of a sysbench table by a new pipeline: time, rows/s and the server's peak memory
#      (with mariadb-dump | mariadb into the same target as a reference).
#   PostgreSQL (--pg, and the default full run):
#   4. initial load of pgbench_accounts (pgbench -i -s 10, 1,000,000 rows) PostgreSQL -> PostgreSQL by a new
#      pipeline, by a native subscription's initial copy and by pg_dump | psql;
#   5. CDC drain PostgreSQL -> PostgreSQL: a pgbench backlog (4 clients) drained by the pipeline, then by the
#      native subscription (publication/subscription); three rounds, each with its own backlog (one with
#      --quick), since one pair of drains on a shared 2-core machine can be off by a fifth either way; before
#      each backlog both slots pass a standby snapshot logged by a CHECKPOINT, so both restart from there;
#   6. peak memory of the idaas server during one 200,000-row transaction on a PostgreSQL source (then one
#      of 1,000,000 rows, to see whether memory grows with the size of a transaction);
#   7. initial load MariaDB -> PostgreSQL of a sysbench table by a new pipeline and by pgloader.
#
#   bench/run.sh                # everything: 60 s backlogs, 30 s latency runs, 1,000,000-row loads (~16 min)
#   bench/run.sh --quick        # everything, shorter: 10 s backlogs and latency runs, 100,000-row
#                               # MariaDB loads (pgbench_accounts keeps its 1,000,000 rows) (~4 min)
#   bench/run.sh --pg           # PostgreSQL benchmarks only (4-7) (~6 min)
#   bench/run.sh --pg --quick   # PostgreSQL benchmarks only, shorter (~1.5 min)
#
# Prints a Markdown summary at the end; raw results go to bench/results/RUN_ID/ (git-ignored).
# Needs sysbench and pgloader (scripts/setup.sh --bench), the MariaDB and PostgreSQL server and client
# packages (scripts/setup.sh; pgbench comes with the PostgreSQL server package). Every database server is a
# private one from idaas-testkit (never a system server); all of them stop when this script ends. Builds the
# release binaries first (cargo build -j2 --release) unless IDAAS_BENCH_SKIP_BUILD=1;
# IDAAS_BENCH_WAIT_QUIET=SECONDS first waits up to that long for other work on the machine to stop.
# IDAAS_BENCH_PERF=1 records each PostgreSQL drain (benchmark 5) with `perf record -a -g` into
# pg/perf-idaas.data and pg/perf-sub.data (perf's own cost then shows in the figures; build with
# RUSTFLAGS="-C force-frame-pointers=yes" for call graphs of idaas).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

usage() {
    awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"
}

QUICK=0
ONLY_PG=0
for arg in "$@"; do
    case "$arg" in
        --quick) QUICK=1 ;;
        --pg) ONLY_PG=1 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "run.sh: unknown argument '$arg'" >&2
            usage >&2
            exit 2
            ;;
    esac
done

if [ "$QUICK" = 1 ]; then
    DRAIN_SECS=10 LAT_SECS=10 LOAD_ROWS=100000 PG_DRAIN_ROUNDS=1
else
    DRAIN_SECS=60 LAT_SECS=30 LOAD_ROWS=1000000 PG_DRAIN_ROUNDS=3
fi
DRAIN_TABLE_SIZE=100000
DRAIN_THREADS=4
LAT_RATE=5000
LAT_CONNS=4
# PostgreSQL: pgbench scale 10 (pgbench_accounts has 100,000 rows per unit), also with --quick
PG_SCALE=10
PG_CLIENTS=4
PG_JOBS=2
TXN_ROWS=200000
TXN_ROWS_LARGE=1000000

# The newest PostgreSQL under /usr/lib/postgresql (Debian), like idaas-testkit; pgbench is only there.
PG_BIN=${IDAAS_TESTKIT_PG_BINDIR:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
for tool in pgbench pg_dump psql; do
    if [ ! -x "$PG_BIN/$tool" ]; then
        echo "run.sh: '$tool' is missing (looked in '$PG_BIN'); run scripts/setup.sh" >&2
        exit 1
    fi
done
if ! command -v pgloader >/dev/null 2>&1; then
    echo "run.sh: 'pgloader' is missing; run scripts/setup.sh --bench" >&2
    exit 1
fi
for tool in sysbench mariadb mariadb-binlog mariadbd; do
    if ! command -v "$tool" >/dev/null 2>&1 && [ ! -x "/usr/sbin/$tool" ]; then
        echo "run.sh: '$tool' is missing; run scripts/setup.sh --bench" >&2
        exit 1
    fi
done
if [ "${IDAAS_BENCH_PERF:-0}" = 1 ] && ! command -v perf >/dev/null 2>&1; then
    echo "run.sh: IDAAS_BENCH_PERF=1 needs 'perf' (Debian package linux-perf: apt-get install linux-perf)" >&2
    exit 1
fi

RUN_ID=$(date -u +%Y%m%dT%H%M%SZ)$([ "$ONLY_PG" = 1 ] && echo -pg || true)$([ "$QUICK" = 1 ] && echo -quick || true)
OUT=$ROOT/bench/results/$RUN_ID
mkdir -p "$OUT"
TMP=$(mktemp -d "${TMPDIR:-/tmp}/idaas-bench-XXXXXX")

log() {
    echo "[$(date -u +%H:%M:%S)] $*" | tee -a "$OUT/run.log" >&2
}
loadavg() {
    cut -d' ' -f1-3 /proc/loadavg
}

# ---------------------------------------------------------------------------------------------------------
# Processes started here, stopped on exit (by their own ids only).
SERVER_STATES=()
SERVER_PIDS=()
IDAAS_PIDS=()
cleanup() {
    local pid state
    for pid in "${IDAAS_PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for state in "${SERVER_STATES[@]}"; do
        touch "$state.stop"
    done
    for pid in "${IDAAS_PIDS[@]}" "${SERVER_PIDS[@]}"; do
        wait "$pid" 2>/dev/null || true
    done
    rm -rf "$TMP"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "${IDAAS_BENCH_SKIP_BUILD:-0}" != 1 ]; then
    log "building release binaries (load $(loadavg))"
    cargo build -j2 --release -p idaas-cli -p idaas-bench >"$OUT/build.log" 2>&1 || {
        tail -20 "$OUT/build.log" >&2
        exit 1
    }
fi
# Private copies: target/ is shared, and another build may replace the binaries while this script runs.
cp "$ROOT/target/release/idaas" "$ROOT/target/release/idaas-bench" "$TMP/"
IDAAS_BIN=$TMP/idaas
BENCH=$TMP/idaas-bench

# With IDAAS_BENCH_PERF=1: perf_start FILE records the whole machine until perf_stop.
PERF_PID=
perf_start() {
    [ "${IDAAS_BENCH_PERF:-0}" = 1 ] || return 0
    perf record -a -g -F 1999 -o "$1" >/dev/null 2>&1 &
    PERF_PID=$!
}
perf_stop() {
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID" 2>/dev/null || true
    wait "$PERF_PID" || true
    PERF_PID=
}

# Busy CPU of the whole machine (all processes), in % of one core, over $1 seconds.
machine_busy() {
    local a b
    a=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
    sleep "$1"
    b=$(awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat)
    awk -v a="$a" -v b="$b" -v s="$1" -v t="$(getconf CLK_TCK)" 'BEGIN { printf "%.0f", 100 * (b - a) / t / s }'
}
# IDAAS_BENCH_WAIT_QUIET=SECONDS: wait up to that long for the machine to be quiet (other work below 25 % of
# one core over 5 s) before starting; the figures are noisy while other builds and tests run.
busy=$(machine_busy 5)
quiet_deadline=$((SECONDS + ${IDAAS_BENCH_WAIT_QUIET:-0}))
while [ "$busy" -ge 25 ] && [ $SECONDS -lt $quiet_deadline ]; do
    log "machine busy ($busy % of one core over 5 s); waiting for it to be quiet"
    busy=$(machine_busy 5)
done

# starts private MariaDB servers: start_servers NAME SPEC... ; then sources their variables
start_servers() {
    local name=$1
    shift
    local state=$TMP/$name.env
    "$BENCH" servers "$state" "$@" 2>>"$OUT/servers.log" &
    SERVER_PIDS+=($!)
    SERVER_STATES+=("$state")
    local i
    for i in $(seq 600); do
        [ -f "$state" ] && break
        kill -0 "${SERVER_PIDS[-1]}" 2>/dev/null || {
            tail "$OUT/servers.log" >&2
            exit 1
        }
        sleep 0.1
    done
    [ -f "$state" ] || {
        echo "run.sh: servers '$name' did not start" >&2
        exit 1
    }
    # shellcheck disable=SC1090
    . "$state"
    cp "$state" "$OUT/$name.servers.env"
}
stop_servers() {
    local name=$1 pid=$2
    touch "$TMP/$name.env.stop"
    wait "$pid" 2>/dev/null || true
}

# starts an idaas server with a fresh data directory; sets API and IDAAS_PID
start_idaas() {
    local name=$1
    local out=$OUT/$name.idaas.out
    IDAAS_LOG=${IDAAS_LOG:-info} "$IDAAS_BIN" server --listen 127.0.0.1:0 --data-dir "$TMP/idaas-$name" \
        >"$out" 2>"$OUT/$name.idaas.log" &
    IDAAS_PID=$!
    IDAAS_PIDS+=("$IDAAS_PID")
    local i
    for i in $(seq 300); do
        grep -q 'listening on http://' "$out" 2>/dev/null && break
        kill -0 "$IDAAS_PID" 2>/dev/null || {
            tail "$OUT/$name.idaas.log" >&2
            exit 1
        }
        sleep 0.1
    done
    API=$(sed -n 's|.*listening on http://\([0-9.:]*\).*|\1|p' "$out")
    [ -n "$API" ] || {
        echo "run.sh: idaas server '$name' did not start" >&2
        exit 1
    }
}
stop_idaas() {
    kill "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}
idaas() {
    "$IDAAS_BIN" --server "http://$API" "$@"
}

# sql PORT "statements" : runs SQL as root on a private server, tab-separated output without headers
sql() {
    local port=$1
    shift
    mariadb --no-defaults -h127.0.0.1 -P"$port" -uroot -p"$PASSWORD" -N -B -e "$*"
}
master_status() {
    sql "$1" "SHOW MASTER STATUS" | cut -f1,2
}
status_var() {
    sql "$1" "SHOW GLOBAL STATUS LIKE '$2'" | cut -f2
}
replicate_from() {
    local replica_port=$1 source_port=$2
    local first
    first=$(sql "$source_port" "SHOW BINARY LOGS" | head -1 | cut -f1)
    sql "$replica_port" "CHANGE MASTER TO MASTER_HOST='127.0.0.1', MASTER_PORT=$source_port, \
        MASTER_USER='root', MASTER_PASSWORD='$PASSWORD', MASTER_LOG_FILE='$first', MASTER_LOG_POS=4; START SLAVE"
}
sysbench_args() {
    echo --db-driver=mysql --mysql-host=127.0.0.1 --mysql-port="$1" --mysql-user=root \
        --mysql-password="$PASSWORD" --mysql-db=sbtest --tables=1
}
now() {
    date +%s.%N
}
# seconds between two `date +%s.%N` values, 3 decimals
elapsed() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f", b - a }'
}
# waits (untimed) until a pipeline's checkpoint reaches the source's current end
catch_up_pipeline() {
    local alias=$1 source_port=$2 f p
    read -r f p < <(master_status "$source_port")
    "$BENCH" wait-pipeline --api "$API" --pipeline "$alias" --file "$f" --pos "$p" --timeout 1800 >/dev/null
}
catch_up_replica() {
    local replica_port=$1 source_port=$2 f p
    read -r f p < <(master_status "$source_port")
    "$BENCH" wait-replica --port "$replica_port" --password "$PASSWORD" --file "$f" --pos "$p" --timeout 1800 \
        >/dev/null
}
sbtest_checksum() {
    sql "$1" "CHECKSUM TABLE sbtest.sbtest1" | cut -f2
}
sbtest_content() {
    sql "$1" "SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', id, k, c, pad))) FROM sbtest.sbtest1" | tr '\t' ' '
}
# waits until the CHECKSUM TABLE of sbtest.sbtest1 on PORT equals EXPECTED; prints the time (epoch) it did
await_checksum() {
    local port=$1 expected=$2 deadline=$((SECONDS + 120))
    while [ "$(sbtest_checksum "$port")" != "$expected" ]; do
        if [ $SECONDS -gt $deadline ]; then
            echo "run.sh: CHECKSUM TABLE on port $port never reached $expected (it is $(sbtest_checksum "$port"))" >&2
            return 1
        fi
        sleep 0.05
    done
    now
}

# --- PostgreSQL
# pgsql PORT "SQL" : runs SQL as postgres on a private PostgreSQL server over TCP (database postgres, or
# $PGDB), unaligned output without headers
pgsql() {
    local port=$1
    shift
    PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$port" -U postgres \
        -d "${PGDB:-postgres}" -c "$*"
}
pg_lsn() {
    pgsql "$1" "SELECT pg_current_wal_lsn()"
}
# The content of pgbench_accounts, in row order (the same query on every server).
ACCOUNTS_SUM="SELECT md5(string_agg(t::text, '' ORDER BY aid)) FROM pgbench_accounts t"
# The content of a sysbench table, the same figure on MariaDB and PostgreSQL: the row count and the sum of
# the first 60 bits of each row's md5 (CHAR values compare without their trailing blanks on both sides).
SBTEST_SUM_MARIADB="SELECT CONCAT(COUNT(*), ' ', SUM(CAST(CONV(SUBSTR(MD5(CONCAT_WS('#', id, k, c, pad)), 1, 15), 16, 10)
    AS UNSIGNED))) FROM sbtest.sbtest1"
sbtest_sum_pg() {
    echo "SELECT count(*) || ' ' || sum(('x' || substr(md5(concat_ws('#', id, k, c::text, pad::text)), 1, 15))::bit(60)::bigint)
        FROM $1"
}
# waits (untimed, at most 60 s) until no autovacuum worker has run on a PostgreSQL server for a second
pg_wait_autovacuum() {
    local port=$1 quiet=0 i
    for i in $(seq 600); do
        if [ "$(pgsql "$port" "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'")" = 0 ]; then
            quiet=$((quiet + 1))
            [ "$quiet" -ge 10 ] && return 0
        else
            quiet=0
        fi
        sleep 0.1
    done
}
# waits (untimed) until a pipeline's checkpoint reaches the PostgreSQL source's current WAL position
pg_catch_up_pipeline() {
    local alias=$1 source_port=$2
    "$BENCH" wait-lsn --api "$API" --pipeline "$alias" --lsn "$(pg_lsn "$source_port")" --timeout 1800 >/dev/null
}
# waits (untimed) until a subscription's latest_end_lsn reaches the source's current WAL position
pg_catch_up_subscription() {
    local socket=$1 port=$2 name=$3 source_port=$4
    "$BENCH" wait-lsn --socket "$socket" --port "$port" --subscription "$name" --lsn "$(pg_lsn "$source_port")" \
        --timeout 1800 >/dev/null
}
# resets the kernel's peak-RSS mark (VmHWM) of a process to its current RSS
reset_hwm() {
    echo 5 >"/proc/$1/clear_refs"
}

# ---------------------------------------------------------------------------------------------------------
log "results in $OUT"
GIT_COMMIT=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
GIT_DIRTY=$([ -n "$(git status --porcelain 2>/dev/null)" ] && echo yes || echo no)
{
    echo "run_id=$RUN_ID"
    echo "quick=$QUICK"
    echo "command=bench/run.sh${*:+ $*}"
    echo "git_commit=$GIT_COMMIT"
    echo "git_dirty=$GIT_DIRTY"
    echo "nproc=$(nproc)"
    echo "cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1)"
    echo "mem_total_mb=$(awk '/MemTotal/ { printf "%d", $2 / 1024 }' /proc/meminfo)"
    echo "kernel=$(uname -r)"
    echo "sysbench=$(sysbench --version)"
    echo "postgresql=$("$PG_BIN/postgres" --version)"
    echo "pgloader=$(pgloader --version | head -1)"
    echo "rustc=$(rustc --version 2>/dev/null || echo unknown)"
    echo "start_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    echo "load_at_start=$(loadavg)"
    echo "machine_busy_before_start_pct=$busy"
    echo "idaas_binary=$(sha256sum "$IDAAS_BIN" | cut -c1-16) built $(date -u -r "$ROOT/target/release/idaas" +%Y-%m-%dT%H:%M:%SZ)"
} >"$OUT/machine.env"
git status --porcelain >"$OUT/git-status.txt" 2>/dev/null || true

# =========================================================================================================
# 1. CDC drain
# =========================================================================================================
bench_drain() {
    local D=$OUT/drain
    mkdir -p "$D"
    log "1. CDC drain: starting source, target and two replicas"
    start_servers drain src tgt:nobinlog rep:nobinlog prep:nobinlog:parallel=4
    local servers_pid=${SERVER_PIDS[-1]}
    echo "mariadb_version=$(sql "$SRC_PORT" 'SELECT VERSION()')" >>"$OUT/machine.env"
    replicate_from "$REP_PORT" "$SRC_PORT"
    replicate_from "$PREP_PORT" "$SRC_PORT"
    sql "$SRC_PORT" "CREATE DATABASE sbtest"
    sql "$TGT_PORT" "CREATE DATABASE sbtest"
    log "1. sysbench prepare: $DRAIN_TABLE_SIZE rows"
    # shellcheck disable=SC2046
    sysbench oltp_write_only $(sysbench_args "$SRC_PORT") --table-size=$DRAIN_TABLE_SIZE prepare >"$D/prepare.txt"

    start_idaas drain
    local idaas_pid=$IDAAS_PID
    idaas connection create --alias src --type mysql --host 127.0.0.1 --port "$SRC_PORT" --user root \
        --password "$PASSWORD" --database sbtest >/dev/null
    idaas connection create --alias tgt --type mysql --host 127.0.0.1 --port "$TGT_PORT" --user root \
        --password "$PASSWORD" --database sbtest >/dev/null
    idaas pipeline create --alias drain --source src.sbtest1 --target tgt.sbtest1 --auto-create --start >/dev/null
    catch_up_pipeline drain "$SRC_PORT"
    # AutoCreate copies columns and the primary key only; give the target sysbench's secondary index too, so
    # it maintains the same indexes as the replicas.
    sql "$TGT_PORT" "ALTER TABLE sbtest.sbtest1 ADD KEY k_1 (k)"
    catch_up_replica "$REP_PORT" "$SRC_PORT"
    catch_up_replica "$PREP_PORT" "$SRC_PORT"
    local base
    base=$(sbtest_checksum "$SRC_PORT")
    for port in "$TGT_PORT" "$REP_PORT" "$PREP_PORT"; do
        [ "$(sbtest_checksum "$port")" = "$base" ] || {
            echo "run.sh: after the initial sync, port $port differs from the source" >&2
            exit 1
        }
    done
    idaas pipeline stop drain >/dev/null
    sql "$REP_PORT" "STOP SLAVE"
    sql "$PREP_PORT" "STOP SLAVE"

    log "1. sysbench oltp_write_only run: $DRAIN_THREADS threads, $DRAIN_SECS s (load $(loadavg))"
    local start_file start_pos end_file end_pos
    read -r start_file start_pos < <(master_status "$SRC_PORT")
    local load_before_run
    load_before_run=$(loadavg)
    # shellcheck disable=SC2046
    sysbench oltp_write_only $(sysbench_args "$SRC_PORT") --table-size=$DRAIN_TABLE_SIZE \
        --threads=$DRAIN_THREADS --time="$DRAIN_SECS" --report-interval=10 run >"$D/sysbench.txt"
    read -r end_file end_pos < <(master_status "$SRC_PORT")
    local txns tps
    txns=$(sed -n 's/^ *transactions: *\([0-9]*\).*/\1/p' "$D/sysbench.txt")
    tps=$(sed -n 's/^ *transactions: *[0-9]* *(\([0-9.]*\) per sec.).*/\1/p' "$D/sysbench.txt")

    log "1. counting the backlog's row events ($start_file:$start_pos .. $end_file:$end_pos)"
    local files bytes
    files=$(sql "$SRC_PORT" "SHOW BINARY LOGS" | cut -f1 | awk -v a="$start_file" -v b="$end_file" '$1 >= a && $1 <= b')
    bytes=$(sql "$SRC_PORT" "SHOW BINARY LOGS" | awk -v a="$start_file" -v b="$end_file" -v s="$start_pos" -v e="$end_pos" '
        $1 >= a && $1 <= b { n = $2; if ($1 == b) n = e; if ($1 == a) n -= s; total += n } END { print total }')
    # shellcheck disable=SC2086
    mariadb-binlog --no-defaults --read-from-remote-server -h127.0.0.1 -P"$SRC_PORT" -uroot -p"$PASSWORD" \
        --start-position="$start_pos" --stop-position="$end_pos" --base64-output=DECODE-ROWS -v $files |
        awk '
            /^### INSERT INTO / { ins++ }
            /^### UPDATE / { upd++ }
            /^### DELETE FROM / { del++ }
            /\t(Write|Update|Delete)_rows(_v1)?: table id/ { ev++ }
            /\tXid = / { xid++ }
            END { printf "%d %d %d %d %d\n", ins, upd, del, ev, xid }' >"$D/binlog-counts.txt"
    local ins upd del events xids
    read -r ins upd del events xids <"$D/binlog-counts.txt"
    cat >"$D/backlog.json" <<EOF
{"secs": $DRAIN_SECS, "threads": $DRAIN_THREADS, "table_size": $DRAIN_TABLE_SIZE,
 "sysbench_transactions": ${txns:-0}, "sysbench_tps": ${tps:-0},
 "binlog": {"start": {"file": "$start_file", "pos": $start_pos}, "end": {"file": "$end_file", "pos": $end_pos},
            "bytes": $bytes, "row_events": $events, "xids": $xids},
 "rows": {"insert": $ins, "update": $upd, "delete": $del, "total": $((ins + upd + del))},
 "load_before_run": "$load_before_run", "load_after_run": "$(loadavg)"}
EOF
    local expected expected_content
    expected=$(sbtest_checksum "$SRC_PORT")
    expected_content=$(sbtest_content "$SRC_PORT")
    sleep 2

    # --- iDaaS
    log "1. drain by iDaaS (load $(loadavg))"
    local c0 s0 y0 t0 ok_at
    c0=$(status_var "$TGT_PORT" Com_commit)
    s0=$(status_var "$TGT_PORT" Com_stmt_execute)
    y0=$(status_var "$TGT_PORT" Innodb_data_fsyncs)
    t0=$(now)
    idaas pipeline start drain >/dev/null
    "$BENCH" wait-pipeline --api "$API" --pipeline drain --file "$end_file" --pos "$end_pos" --t0 "$t0" \
        --pids "idaas=$idaas_pid,source=$SRC_PID,target=$TGT_PID" --timeline "$D/idaas-timeline.csv" \
        >"$D/idaas.json"
    ok_at=$(await_checksum "$TGT_PORT" "$expected")
    idaas pipeline stats drain --json >"$D/idaas-stats.json"
    idaas pipeline stop drain >/dev/null
    cat >"$D/idaas-check.json" <<EOF
{"checksum_equal_at_s": $(elapsed "$t0" "$ok_at"), "checksum": $expected,
 "content_source": "$expected_content", "content_target": "$(sbtest_content "$TGT_PORT")",
 "target_commits": $(($(status_var "$TGT_PORT" Com_commit) - c0)),
 "target_statements": $(($(status_var "$TGT_PORT" Com_stmt_execute) - s0)),
 "target_innodb_fsyncs": $(($(status_var "$TGT_PORT" Innodb_data_fsyncs) - y0))}
EOF
    sleep 2

    # --- native replicas
    local name port pid
    for name in rep prep; do
        if [ "$name" = rep ]; then port=$REP_PORT pid=$REP_PID; else port=$PREP_PORT pid=$PREP_PID; fi
        log "1. drain by the native replica '$name' (load $(loadavg))"
        y0=$(status_var "$port" Innodb_data_fsyncs)
        c0=$(status_var "$port" Handler_commit)
        t0=$(now)
        sql "$port" "START SLAVE"
        "$BENCH" wait-replica --port "$port" --password "$PASSWORD" --file "$end_file" --pos "$end_pos" --t0 "$t0" \
            --pids "source=$SRC_PID,replica=$pid" --timeline "$D/$name-timeline.csv" >"$D/$name.json"
        ok_at=$(await_checksum "$port" "$expected")
        sql "$port" "STOP SLAVE"
        cat >"$D/$name-check.json" <<EOF
{"checksum_equal_at_s": $(elapsed "$t0" "$ok_at"), "checksum": $expected,
 "content_source": "$expected_content", "content_target": "$(sbtest_content "$port")",
 "replica_handler_commits": $(($(status_var "$port" Handler_commit) - c0)),
 "replica_innodb_fsyncs": $(($(status_var "$port" Innodb_data_fsyncs) - y0))}
EOF
        sleep 2
    done
    cp "$SRC_LOG" "$D/source-mariadbd.err" 2>/dev/null || true
    stop_idaas "$idaas_pid"
    stop_servers drain "$servers_pid"
}

# =========================================================================================================
# 2. Latency at a steady rate
# =========================================================================================================
bench_latency() {
    local L=$OUT/latency
    mkdir -p "$L"
    log "2. latency: starting source, target and two replicas"
    start_servers latency src tgt:nobinlog rep:nobinlog prep:nobinlog:parallel=4
    local servers_pid=${SERVER_PIDS[-1]}
    replicate_from "$REP_PORT" "$SRC_PORT"
    replicate_from "$PREP_PORT" "$SRC_PORT"
    sql "$SRC_PORT" "CREATE DATABASE lat; CREATE TABLE lat.events (id BIGINT PRIMARY KEY, payload VARCHAR(100), n INT)"
    sql "$TGT_PORT" "CREATE DATABASE lat; CREATE TABLE lat.events (id BIGINT PRIMARY KEY, payload VARCHAR(100),
        n INT, applied_at TIMESTAMP(6) NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6))"
    start_idaas latency
    local idaas_pid=$IDAAS_PID
    idaas connection create --alias src --type mysql --host 127.0.0.1 --port "$SRC_PORT" --user root \
        --password "$PASSWORD" --database lat >/dev/null
    idaas connection create --alias tgt --type mysql --host 127.0.0.1 --port "$TGT_PORT" --user root \
        --password "$PASSWORD" --database lat >/dev/null
    idaas pipeline create --alias lat --source src.events --target tgt.events --start >/dev/null
    catch_up_pipeline lat "$SRC_PORT"
    catch_up_replica "$REP_PORT" "$SRC_PORT"
    catch_up_replica "$PREP_PORT" "$SRC_PORT"
    sql "$REP_PORT" "STOP SLAVE"
    sql "$PREP_PORT" "STOP SLAVE"
    local common=(--source-port "$SRC_PORT" --password "$PASSWORD" --rate $LAT_RATE --secs "$LAT_SECS"
        --conns $LAT_CONNS --update-every 5)

    log "2a. iDaaS, applied_at (load $(loadavg))"
    "$BENCH" latency "${common[@]}" --first-id 1 --check-port "$TGT_PORT" --applied-at \
        --pids "idaas=$idaas_pid,source=$SRC_PID,target=$TGT_PID" --raw "$L/idaas-applied-raw.csv" \
        >"$L/idaas-applied.json"
    sleep 2
    log "2b. iDaaS, polled (load $(loadavg))"
    "$BENCH" latency "${common[@]}" --first-id 100000001 --check-port "$TGT_PORT" --applied-at \
        --poll-port "$TGT_PORT" --pids "idaas=$idaas_pid,source=$SRC_PID,target=$TGT_PID" \
        --raw "$L/idaas-poll-raw.csv" >"$L/idaas-poll.json"
    idaas pipeline stats lat --json >"$L/idaas-stats.json"
    idaas pipeline stop lat >/dev/null
    sleep 2

    local name port pid first=200000001
    for name in rep prep; do
        if [ "$name" = rep ]; then port=$REP_PORT pid=$REP_PID; else port=$PREP_PORT pid=$PREP_PID; fi
        sql "$port" "START SLAVE"
        catch_up_replica "$port" "$SRC_PORT"
        sleep 2
        log "2c. native replica '$name', polled (load $(loadavg))"
        "$BENCH" latency "${common[@]}" --first-id $first --check-port "$port" --poll-port "$port" \
            --pids "source=$SRC_PID,replica=$pid" --raw "$L/$name-poll-raw.csv" >"$L/$name-poll.json"
        sql "$port" "STOP SLAVE"
        first=$((first + 100000000))
        sleep 2
    done

    # Everything consistent at the end: all consumers catch up, contents compared (without applied_at).
    idaas pipeline start lat >/dev/null
    sql "$REP_PORT" "START SLAVE"
    sql "$PREP_PORT" "START SLAVE"
    catch_up_pipeline lat "$SRC_PORT"
    catch_up_replica "$REP_PORT" "$SRC_PORT"
    catch_up_replica "$PREP_PORT" "$SRC_PORT"
    local q="SELECT COUNT(*), BIT_XOR(CRC32(CONCAT_WS('#', id, payload, n))) FROM lat.events"
    {
        echo "source $(sql "$SRC_PORT" "$q")"
        echo "target $(sql "$TGT_PORT" "$q")"
        echo "rep $(sql "$REP_PORT" "$q")"
        echo "prep $(sql "$PREP_PORT" "$q")"
    } | tr '\t' ' ' >"$L/final-content.txt"
    stop_idaas "$idaas_pid"
    stop_servers latency "$servers_pid"
}

# =========================================================================================================
# 3. Initial load
# =========================================================================================================
bench_load() {
    local I=$OUT/load
    mkdir -p "$I"
    log "3. initial load: starting source and target"
    start_servers load src tgt:nobinlog
    local servers_pid=${SERVER_PIDS[-1]}
    sql "$SRC_PORT" "CREATE DATABASE sbtest"
    sql "$TGT_PORT" "CREATE DATABASE sbtest; CREATE DATABASE peer"
    log "3. sysbench oltp_read_write prepare: $LOAD_ROWS rows"
    # shellcheck disable=SC2046
    sysbench oltp_read_write $(sysbench_args "$SRC_PORT") --table-size=$LOAD_ROWS prepare >"$I/prepare.txt"
    sql "$SRC_PORT" "ANALYZE TABLE sbtest.sbtest1" >/dev/null
    start_idaas load
    local idaas_pid=$IDAAS_PID
    idaas connection create --alias src --type mysql --host 127.0.0.1 --port "$SRC_PORT" --user root \
        --password "$PASSWORD" --database sbtest >/dev/null
    idaas connection create --alias tgt --type mysql --host 127.0.0.1 --port "$TGT_PORT" --user root \
        --password "$PASSWORD" --database sbtest >/dev/null
    sleep 2
    log "3. pipeline create --auto-create --start (load $(loadavg))"
    local t0
    t0=$(now)
    idaas pipeline create --alias load --source src.sbtest1 --target tgt.sbtest1 --auto-create --start >/dev/null
    "$BENCH" wait-snapshot --api "$API" --pipeline load --pid "$idaas_pid" --t0 "$t0" --interval-ms 100 \
        --pids "idaas=$idaas_pid,source=$SRC_PID,target=$TGT_PID" --timeline "$I/rss-timeline.csv" \
        >"$I/idaas.json"
    idaas pipeline stats load --json >"$I/idaas-stats.json"
    idaas pipeline stop load >/dev/null
    local src_sum tgt_sum
    src_sum=$(sbtest_checksum "$SRC_PORT")
    tgt_sum=$(sbtest_checksum "$TGT_PORT")
    cat >"$I/idaas-check.json" <<EOF
{"rows": $LOAD_ROWS, "checksum_source": $src_sum, "checksum_target": $tgt_sum,
 "content_source": "$(sbtest_content "$SRC_PORT")", "content_target": "$(sbtest_content "$TGT_PORT")"}
EOF
    stop_idaas "$idaas_pid"
    sleep 2

    # Reference: mariadb-dump | mariadb into a table of the same shape as the one AutoCreate made.
    log "3. reference: mariadb-dump | mariadb (load $(loadavg))"
    local ddl
    ddl=$(sql "$TGT_PORT" "SHOW CREATE TABLE sbtest.sbtest1" | cut -f2 | sed 's/\\n/ /g')
    sql "$TGT_PORT" "USE peer; $ddl"
    local d0 d1 dump_load
    dump_load=$(loadavg)
    d0=$(now)
    mariadb-dump --no-defaults -h127.0.0.1 -P"$SRC_PORT" -uroot -p"$PASSWORD" --single-transaction --quick \
        --no-create-info sbtest sbtest1 |
        mariadb --no-defaults -h127.0.0.1 -P"$TGT_PORT" -uroot -p"$PASSWORD" peer
    d1=$(now)
    cat >"$I/dump.json" <<EOF
{"rows": $LOAD_ROWS, "elapsed_s": $(elapsed "$d0" "$d1"), "load_before": "$dump_load", "load_after": "$(loadavg)",
 "checksum_equal": $([ "$(sql "$TGT_PORT" "CHECKSUM TABLE peer.sbtest1" | cut -f2)" = "$src_sum" ] && echo true || echo false)}
EOF
    stop_servers load "$servers_pid"
}

# =========================================================================================================
# 4.-6. PostgreSQL -> PostgreSQL: initial load, CDC drain, memory during one large transaction
# =========================================================================================================
bench_pg() {
    local P=$OUT/pg
    mkdir -p "$P"
    log "4. PostgreSQL: starting source, iDaaS target and subscriber"
    start_servers pg src:pg tgt:pg sub:pg
    local servers_pid=${SERVER_PIDS[-1]}
    echo "postgresql_server=$(pgsql "$SRC_PORT" 'SELECT version()')" >>"$OUT/machine.env"
    local pgb=(-h 127.0.0.1 -U postgres)
    log "4. pgbench -i -s $PG_SCALE"
    PGPASSWORD=$PG_PASSWORD "$PG_BIN/pgbench" -i -s $PG_SCALE "${pgb[@]}" -p "$SRC_PORT" postgres \
        >"$P/pgbench-init.txt" 2>&1
    local rows base
    rows=$(pgsql "$SRC_PORT" "SELECT count(*) FROM pgbench_accounts")
    base=$(pgsql "$SRC_PORT" "$ACCOUNTS_SUM")
    pgsql "$SRC_PORT" "CREATE PUBLICATION bench_pub FOR TABLE public.pgbench_accounts"
    # The subscriber's table: pgbench's own definition (columns, fillfactor, primary key), schema only.
    PGPASSWORD=$PG_PASSWORD "$PG_BIN/pg_dump" "${pgb[@]}" -p "$SRC_PORT" -s -t public.pgbench_accounts postgres |
        PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "${pgb[@]}" -p "$SUB_PORT" -d postgres >/dev/null
    pgsql "$TGT_PORT" "CREATE DATABASE peer"
    pgsql "$SRC_PORT" "CHECKPOINT"
    start_idaas pg
    local idaas_pid=$IDAAS_PID
    local conn=(--type postgres --host 127.0.0.1 --user postgres --password "$PG_PASSWORD" --database postgres)
    idaas connection create --alias src --port "$SRC_PORT" "${conn[@]}" >/dev/null
    idaas connection create --alias tgt --port "$TGT_PORT" "${conn[@]}" >/dev/null
    sleep 2

    # --- 4a. iDaaS initial load
    log "4a. initial load by iDaaS: pipeline create --auto-create --start ($rows rows; load $(loadavg))"
    local t0 t1
    t0=$(now)
    idaas pipeline create --alias drain --source src.public.pgbench_accounts --target tgt.public.pgbench_accounts \
        --auto-create --start >/dev/null
    # polled every 20 ms, like the subscription below, so neither end is rounded up more than the other
    "$BENCH" wait-snapshot --api "$API" --pipeline drain --pid "$idaas_pid" --t0 "$t0" --interval-ms 20 \
        --pids "idaas=$idaas_pid,source=$SRC_PID,target=$TGT_PID" --timeline "$P/load-idaas-timeline.csv" \
        >"$P/load-idaas.json"
    idaas pipeline stats drain --json >"$P/load-idaas-stats.json"
    cat >"$P/load-idaas-check.json" <<JSON
{"rows": $rows, "checksum_source": "$base", "checksum_target": "$(pgsql "$TGT_PORT" "$ACCOUNTS_SUM")"}
JSON
    pgsql "$TGT_PORT" "SELECT pg_get_indexdef(indexrelid) FROM pg_index WHERE indrelid = 'pgbench_accounts'::regclass" \
        >"$P/load-idaas-target-indexes.txt"
    sleep 2

    # --- 4b. native subscription, initial copy
    log "4b. initial load by a native subscription (copy_data = true; load $(loadavg))"
    t0=$(now)
    pgsql "$SUB_PORT" "CREATE SUBSCRIPTION bench_sub CONNECTION 'host=127.0.0.1 port=$SRC_PORT user=postgres \
        password=$PG_PASSWORD dbname=postgres' PUBLICATION bench_pub WITH (copy_data = true)"
    "$BENCH" wait-subscription-copy --socket "$SUB_SOCKET" --port "$SUB_PORT" --subscription bench_sub --t0 "$t0" \
        --pids "source=$SRC_PID,subscriber=$SUB_PID" --timeline "$P/load-sub-timeline.csv" >"$P/load-sub.json"
    cat >"$P/load-sub-check.json" <<JSON
{"rows": $rows, "checksum_source": "$base", "checksum_target": "$(pgsql "$SUB_PORT" "$ACCOUNTS_SUM")"}
JSON
    sleep 2

    # --- 4c. pg_dump | psql
    log "4c. initial load by pg_dump | psql (load $(loadavg))"
    local dump_load
    dump_load=$(loadavg)
    t0=$(now)
    PGPASSWORD=$PG_PASSWORD "$PG_BIN/pg_dump" "${pgb[@]}" -p "$SRC_PORT" -t public.pgbench_accounts postgres |
        PGPASSWORD=$PG_PASSWORD "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 "${pgb[@]}" -p "$TGT_PORT" -d peer >/dev/null
    t1=$(now)
    cat >"$P/load-dump.json" <<JSON
{"rows": $rows, "elapsed_s": $(elapsed "$t0" "$t1"), "load_before": "$dump_load", "load_after": "$(loadavg)",
 "checksum_source": "$base", "checksum_target": "$(PGDB=peer pgsql "$TGT_PORT" "$ACCOUNTS_SUM")"}
JSON
    sleep 2

    # --- 5. CDC drain
    log "5. drain: both consumers catch up, then stop"
    pg_catch_up_pipeline drain "$SRC_PORT"
    pg_catch_up_subscription "$SUB_SOCKET" "$SUB_PORT" bench_sub "$SRC_PORT"
    for port in "$TGT_PORT" "$SUB_PORT"; do
        [ "$(pgsql "$port" "$ACCOUNTS_SUM")" = "$base" ] || {
            echo "run.sh: after the initial load, pgbench_accounts on port $port differs from the source" >&2
            exit 1
        }
    done
    # Each round: a new backlog with both consumers stopped, drained by iDaaS, then by the subscription. The
    # first round's files are pg/*.json, the others' pg/round-N/*.json.
    local i round R mark aligned
    for round in $(seq "$PG_DRAIN_ROUNDS"); do
        R=$P
        if [ "$round" -gt 1 ]; then
            R=$P/round-$round
            mkdir -p "$R"
            idaas pipeline start drain >/dev/null
            pgsql "$SUB_PORT" "ALTER SUBSCRIPTION bench_sub ENABLE"
        fi
        # Both consumers start the backlog from a like position. A restarted slot decodes again from its
        # restart point, the last standby snapshot (xl_running_xacts, logged every 15 s while the source is
        # busy) that its consumer confirmed, and where that is depends on when each was stopped: after the
        # previous round it made one consumer or the other decode up to 0.8 s of old WAL before the first
        # change. A CHECKPOINT logs a standby snapshot; once both running consumers confirmed past it, both
        # slots restart from there.
        mark=$(pg_lsn "$SRC_PORT")
        pgsql "$SRC_PORT" "CHECKPOINT"
        aligned=no
        for i in $(seq 300); do
            if [ "$(pgsql "$SRC_PORT" "SELECT count(*) FROM pg_replication_slots WHERE slot_name IN ('idaas_drain', \
                'bench_sub') AND restart_lsn >= '$mark'")" = 2 ]; then
                aligned=yes
                break
            fi
            sleep 0.1
        done
        echo "{\"mark\": \"$mark\", \"both_slots_past_it\": \"$aligned\"}" >"$R/restart-points.json"
        [ "$aligned" = yes ] || log "5. round $round: a slot did not pass the standby snapshot at $mark within 30 s"
        idaas pipeline stop drain >/dev/null
        pgsql "$SUB_PORT" "ALTER SUBSCRIPTION bench_sub DISABLE"
        for i in $(seq 200); do
            [ "$(pgsql "$SUB_PORT" "SELECT count(pid) FROM pg_stat_subscription WHERE subname = 'bench_sub'")" = 0 ] && break
            sleep 0.05
        done
        log "5. round $round of $PG_DRAIN_ROUNDS: pgbench -c $PG_CLIENTS -j $PG_JOBS -T $DRAIN_SECS (load $(loadavg))"
        local start_lsn end_lsn upd0 upd1 load_before_run
        start_lsn=$(pg_lsn "$SRC_PORT")
        upd0=$(pgsql "$SRC_PORT" "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgbench_accounts'::regclass")
        load_before_run=$(loadavg)
        PGPASSWORD=$PG_PASSWORD "$PG_BIN/pgbench" -c $PG_CLIENTS -j $PG_JOBS -T "$DRAIN_SECS" "${pgb[@]}" -p "$SRC_PORT" \
            postgres >"$R/pgbench-run.txt" 2>&1
        end_lsn=$(pg_lsn "$SRC_PORT")
        local txns failed tps wal_bytes expected
        txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$R/pgbench-run.txt")
        failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$R/pgbench-run.txt")
        tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)/\1/p' "$R/pgbench-run.txt")
        wal_bytes=$(pgsql "$SRC_PORT" "SELECT pg_wal_lsn_diff('$end_lsn', '$start_lsn')")
        expected=$(pgsql "$SRC_PORT" "$ACCOUNTS_SUM")
        sleep 1
        upd1=$(pgsql "$SRC_PORT" "SELECT n_tup_upd FROM pg_stat_user_tables WHERE relid = 'pgbench_accounts'::regclass")
        cat >"$R/backlog.json" <<JSON
{"secs": $DRAIN_SECS, "clients": $PG_CLIENTS, "jobs": $PG_JOBS, "scale": $PG_SCALE, "accounts_rows": $rows,
 "pgbench_transactions": ${txns:-0}, "pgbench_failed": ${failed:-0}, "pgbench_tps": ${tps:-0},
 "accounts_updates": $((upd1 - upd0)), "wal": {"start": "$start_lsn", "end": "$end_lsn", "bytes": $wal_bytes},
 "load_before_run": "$load_before_run", "load_after_run": "$(loadavg)"}
JSON
        sleep 2
        # pgbench leaves work to autovacuum (pgbench_history's inserts, the accounts' analyze), which would run
        # during the first drain only: wait until the source is quiet.
        pg_wait_autovacuum "$SRC_PORT"

        log "5. round $round: drain by iDaaS (load $(loadavg))"
        reset_hwm "$idaas_pid"
        [ "$round" -gt 1 ] || perf_start "$P/perf-idaas.data"
        t0=$(now)
        idaas pipeline start drain >/dev/null
        "$BENCH" wait-lsn --api "$API" --pipeline drain --lsn "$end_lsn" --t0 "$t0" \
            --check-socket "$TGT_SOCKET" --check-port "$TGT_PORT" --check-sql "$ACCOUNTS_SUM" --expected "$expected" \
            --pids "idaas=$idaas_pid,source=$SRC_PID,target=$TGT_PID" --timeline "$R/drain-idaas-timeline.csv" \
            --rss-pid "$idaas_pid" --rss-timeline "$R/drain-idaas-rss.csv" >"$R/drain-idaas.json"
        perf_stop
        idaas pipeline stats drain --json >"$R/drain-idaas-stats.json"
        idaas pipeline stop drain >/dev/null
        sleep 2

        pg_wait_autovacuum "$SRC_PORT"
        log "5. round $round: drain by the native subscription (load $(loadavg))"
        [ "$round" -gt 1 ] || perf_start "$P/perf-sub.data"
        t0=$(now)
        pgsql "$SUB_PORT" "ALTER SUBSCRIPTION bench_sub ENABLE"
        "$BENCH" wait-lsn --socket "$SUB_SOCKET" --port "$SUB_PORT" --subscription bench_sub --lsn "$end_lsn" --t0 "$t0" \
            --check-socket "$SUB_SOCKET" --check-port "$SUB_PORT" --check-sql "$ACCOUNTS_SUM" --expected "$expected" \
            --pids "source=$SRC_PID,subscriber=$SUB_PID" --timeline "$R/drain-sub-timeline.csv" >"$R/drain-sub.json"
        perf_stop
        pgsql "$SUB_PORT" "ALTER SUBSCRIPTION bench_sub DISABLE"
        sleep 2
    done
    stop_idaas "$idaas_pid"
    sleep 2

    # --- 6. one large transaction
    log "6. one $TXN_ROWS-row transaction, then one of $TXN_ROWS_LARGE rows, through a fresh idaas server"
    pgsql "$SRC_PORT" "CREATE TABLE public.big (id bigint PRIMARY KEY, n integer NOT NULL, payload text NOT NULL)"
    start_idaas txn
    idaas_pid=$IDAAS_PID
    idaas connection create --alias src --port "$SRC_PORT" "${conn[@]}" >/dev/null
    idaas connection create --alias tgt --port "$TGT_PORT" "${conn[@]}" >/dev/null
    idaas pipeline create --alias big --source src.public.big --target tgt.public.big --auto-create --start >/dev/null
    "$BENCH" wait-snapshot --api "$API" --pipeline big --pid "$idaas_pid" >/dev/null
    pg_catch_up_pipeline big "$SRC_PORT"
    sleep 2
    local big_sum="SELECT count(*) || ' ' || md5(string_agg(t::text, '' ORDER BY id)) FROM big t"
    # The second, larger transaction shows whether memory grows with the size of a transaction.
    local first=1 n last insert big_expected waiter
    for n in $TXN_ROWS $TXN_ROWS_LARGE; do
        last=$((first + n - 1))
        insert="INSERT INTO big SELECT g, g % 1000, repeat(md5(g::text), 4) FROM generate_series($first, $last) g"
        # the expected content of the whole table afterwards, computed without the table
        big_expected=$(pgsql "$SRC_PORT" "SELECT count(*) || ' ' || md5(string_agg(t::text, '' ORDER BY id)) FROM
            (SELECT g::bigint AS id, g % 1000 AS n, repeat(md5(g::text), 4) AS payload FROM generate_series(1, $last) g) t")
        rm -f "$TMP/big.lsn"
        reset_hwm "$idaas_pid"
        t0=$(now)
        "$BENCH" wait-lsn --api "$API" --pipeline big --lsn-file "$TMP/big.lsn" --t0 "$t0" \
            --check-socket "$TGT_SOCKET" --check-port "$TGT_PORT" --check-sql "$big_sum" --expected "$big_expected" \
            --pids "idaas=$idaas_pid,source=$SRC_PID,target=$TGT_PID" --timeline "$P/txn-$n-timeline.csv" \
            --rss-pid "$idaas_pid" --rss-timeline "$P/txn-$n-rss.csv" >"$P/txn-$n.json" &
        waiter=$!
        log "6. $insert (load $(loadavg))"
        pgsql "$SRC_PORT" "$insert"
        t1=$(now)
        pg_lsn "$SRC_PORT" >"$TMP/big.lsn.tmp"
        mv "$TMP/big.lsn.tmp" "$TMP/big.lsn"
        wait "$waiter"
        cat >"$P/txn-$n-info.json" <<JSON
{"rows": $n, "statement": "$insert", "insert_s": $(elapsed "$t0" "$t1"),
 "wal_lsn_after": "$(cat "$TMP/big.lsn")", "table_size_bytes": $(pgsql "$SRC_PORT" "SELECT pg_table_size('big')")}
JSON
        first=$((last + 1))
        sleep 2
    done
    idaas pipeline stats big --json >"$P/txn-stats.json"
    stop_idaas "$idaas_pid"
    cp "$SRC_LOG" "$P/source-postgres.log" 2>/dev/null || true
    cp "$SUB_LOG" "$P/subscriber-postgres.log" 2>/dev/null || true
    stop_servers pg "$servers_pid"
}

# =========================================================================================================
# 7. MariaDB -> PostgreSQL initial load
# =========================================================================================================
bench_pg_from_mariadb() {
    local M=$OUT/pg
    mkdir -p "$M"
    log "7. MariaDB -> PostgreSQL: starting a MariaDB source and a PostgreSQL target"
    start_servers mpg msrc pgt:pg
    local servers_pid=${SERVER_PIDS[-1]}
    grep -q '^mariadb_version=' "$OUT/machine.env" ||
        echo "mariadb_version=$(sql "$MSRC_PORT" 'SELECT VERSION()')" >>"$OUT/machine.env"
    sql "$MSRC_PORT" "CREATE DATABASE sbtest"
    pgsql "$PGT_PORT" "CREATE DATABASE peer"
    log "7. sysbench oltp_read_write prepare: $LOAD_ROWS rows, no secondary index"
    # shellcheck disable=SC2046
    sysbench oltp_read_write $(sysbench_args "$MSRC_PORT") --table-size=$LOAD_ROWS --create_secondary=off \
        prepare >"$M/mload-prepare.txt"
    sql "$MSRC_PORT" "ANALYZE TABLE sbtest.sbtest1" >/dev/null
    local src_sum
    src_sum=$(sql "$MSRC_PORT" "$SBTEST_SUM_MARIADB")
    start_idaas mpg
    local idaas_pid=$IDAAS_PID
    idaas connection create --alias msrc --type mysql --host 127.0.0.1 --port "$MSRC_PORT" --user root \
        --password "$PASSWORD" --database sbtest >/dev/null
    idaas connection create --alias pgt --type postgres --host 127.0.0.1 --port "$PGT_PORT" --user postgres \
        --password "$PG_PASSWORD" --database postgres >/dev/null
    sleep 2
    log "7. initial load by iDaaS (load $(loadavg))"
    local t0 t1
    t0=$(now)
    idaas pipeline create --alias load --source msrc.sbtest1 --target pgt.public.sbtest1 --auto-create --start \
        >/dev/null
    "$BENCH" wait-snapshot --api "$API" --pipeline load --pid "$idaas_pid" --t0 "$t0" --interval-ms 100 \
        --pids "idaas=$idaas_pid,source=$MSRC_PID,target=$PGT_PID" --timeline "$M/mload-idaas-timeline.csv" \
        >"$M/mload-idaas.json"
    idaas pipeline stats load --json >"$M/mload-idaas-stats.json"
    idaas pipeline stop load >/dev/null
    cat >"$M/mload-idaas-check.json" <<JSON
{"rows": $LOAD_ROWS, "content_source": "$src_sum", "content_target": "$(pgsql "$PGT_PORT" "$(sbtest_sum_pg public.sbtest1)")"}
JSON
    pgsql "$PGT_PORT" "SELECT column_name || ' ' || data_type FROM information_schema.columns WHERE table_name = 'sbtest1'
        ORDER BY ordinal_position" >"$M/mload-idaas-target-columns.txt"
    stop_idaas "$idaas_pid"
    sleep 2
    log "7. initial load by pgloader (load $(loadavg))"
    local pl_load
    pl_load=$(loadavg)
    t0=$(now)
    pgloader "mysql://root:$PASSWORD@127.0.0.1:$MSRC_PORT/sbtest" \
        "postgresql://postgres:$PG_PASSWORD@127.0.0.1:$PGT_PORT/peer" >"$M/mload-pgloader.txt" 2>&1
    t1=$(now)
    cat >"$M/mload-pgloader.json" <<JSON
{"rows": $LOAD_ROWS, "elapsed_s": $(elapsed "$t0" "$t1"), "load_before": "$pl_load", "load_after": "$(loadavg)",
 "content_source": "$src_sum", "content_target": "$(PGDB=peer pgsql "$PGT_PORT" "$(sbtest_sum_pg sbtest.sbtest1)")"}
JSON
    PGDB=peer pgsql "$PGT_PORT" "SELECT column_name || ' ' || data_type FROM information_schema.columns
        WHERE table_name = 'sbtest1' ORDER BY ordinal_position" >"$M/mload-pgloader-target-columns.txt"
    stop_servers mpg "$servers_pid"
}

if [ "$ONLY_PG" = 0 ]; then
    bench_drain
    bench_latency
    bench_load
fi
bench_pg
bench_pg_from_mariadb
echo "end_utc=$(date -u +%Y-%m-%dT%H:%M:%SZ)" >>"$OUT/machine.env"
echo "load_at_end=$(loadavg)" >>"$OUT/machine.env"
log "done"
"$BENCH" report "$OUT" | tee "$OUT/summary.md"
