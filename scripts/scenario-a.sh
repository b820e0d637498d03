#!/usr/bin/env bash
# Scenario A of the product brief, for real, on this machine:
#   1. starts two private MariaDB servers (source `crm`, target `analyticaldb`) and seeds crm.Customer with
#      10,000 rows holding a column of every common MySQL type;
#   2. starts `idaas server`, registers both databases as the brief's mysql_crm_db and mysql_analytical_db,
#      creates my_pipeline (Customer -> CRM_Customer, AutoCreate) and starts it;
#   3. applies 2,000 mixed inserts/updates/deletes to the source while the pipeline runs, waits until the
#      target equals the source (CHECKSUM TABLE) and prints the pipeline's stats.
#
#   scripts/scenario-a.sh            # run it and clean up
#   scripts/scenario-a.sh --keep     # leave the servers running until Ctrl-C (try the CLI meanwhile)
#   ROWS=100000 scripts/scenario-a.sh
set -euo pipefail
cd "$(dirname "$0")/.."
keep=false
[ "${1:-}" = "--keep" ] && keep=true
rows="${ROWS:-10000}"

bash scripts/setup.sh
echo "== building"
cargo build -j"${CARGO_BUILD_JOBS:-2}" --release -p idaas-cli -p idaas-testkit --bins
bin=target/release
work="$(mktemp -d "${TMPDIR:-/tmp}/idaas-scenario-a.XXXXXX")"
state="$work/dbs.env"
pids=()
cleanup() {
    touch "$state.stop"
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT INT TERM

echo "== starting private MariaDB servers and seeding crm.Customer ($rows rows)"
"$bin/idaas-demo-db" up "$state" "$rows" &
pids+=($!)
for _ in $(seq 1 600); do [ -f "$state" ] && break; sleep 0.2; done
[ -f "$state" ] || { echo "the database servers did not start" >&2; exit 1; }
# shellcheck disable=SC1090
. "$state"
export DEMO_PASSWORD

port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
export IDAAS_SERVER="http://127.0.0.1:$port"
"$bin/idaas" server --listen "127.0.0.1:$port" --data-dir "$work/idaas-data" >"$work/server.out" 2>"$work/server.log" &
pids+=($!)
for _ in $(seq 1 100); do grep -q listening "$work/server.out" 2>/dev/null && break; sleep 0.1; done
echo "== idaas server on $IDAAS_SERVER"

idaas() {
    echo "\$ idaas $*"
    "$bin/idaas" "$@"
}
idaas connection create --alias mysql_crm_db --host 127.0.0.1 --port "$SRC_PORT" --user demo \
    --password-env DEMO_PASSWORD --database crm
idaas connection create --alias mysql_analytical_db --host 127.0.0.1 --port "$TGT_PORT" --user demo \
    --password-env DEMO_PASSWORD --database analyticaldb
idaas pipeline create --alias my_pipeline --source mysql_crm_db.Customer \
    --target mysql_analytical_db.CRM_Customer --auto-create --start

src_sql() { mariadb --socket="$SRC_SOCKET" -uroot -p"$ROOT_PASSWORD" --batch --skip-column-names "$@"; }
tgt_sql() { mariadb --socket="$TGT_SOCKET" -uroot -p"$ROOT_PASSWORD" --batch --skip-column-names "$@"; }
checksum() { "$1" -e "CHECKSUM TABLE $2" | cut -f2; }

echo "== applying 2,000 changes to the source while the pipeline runs"
"$bin/idaas-demo-db" changes "$((rows + 1))" 2000 7 | src_sql crm

echo "== waiting until the target equals the source"
for _ in $(seq 1 600); do
    a="$(checksum src_sql crm.Customer)"
    b="$(checksum tgt_sql analyticaldb.CRM_Customer 2>/dev/null || true)"
    [ -n "$a" ] && [ "$a" = "$b" ] && break
    sleep 0.5
done
echo "source crm.Customer checksum:               $a ($(src_sql -e 'SELECT COUNT(*) FROM crm.Customer') rows)"
echo "target analyticaldb.CRM_Customer checksum:  $b ($(tgt_sql -e 'SELECT COUNT(*) FROM analyticaldb.CRM_Customer') rows)"
[ "$a" = "$b" ] || { echo "target does not equal the source; server log: $work/server.log" >&2; exit 1; }

echo "== my_pipeline.stats()"
idaas pipeline stats my_pipeline

if $keep; then
    echo
    echo "Servers keep running. Try: IDAAS_SERVER=$IDAAS_SERVER $bin/idaas pipeline stats my_pipeline --follow"
    echo "Source: mariadb --socket=$SRC_SOCKET -uroot -p$ROOT_PASSWORD crm      (Ctrl-C here stops everything)"
    wait
fi
