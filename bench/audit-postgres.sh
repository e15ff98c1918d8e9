#!/usr/bin/env bash
# Load benchmark of the PostgreSQL audit backend: a throw-away cluster (scripts/with-postgres, TLS on),
# a release vlms-rt-server with `--audit-db postgres://…?sslmode=require --audit-db-ca …`, h2load on
# unary Recommend at 1×1 and 16×32; then the server's own counters (every call OK?), the batch sizes,
# and `audit verify` over the whole trail.
#
# Usage: bench/audit-postgres.sh [CASE.json] [DURATION_SECONDS]
# Environment: LABEL names the run (default 1x1-16x32).
# Needs h2load (Debian package nghttp2-client), curl and the PostgreSQL server (Debian package
# postgresql).
# Writes what it prints to docs/perf/runs/<UTC date>-audit-postgres-<label>.txt, headed by the
# date, commit, machine and command line (a failed run goes to bench/out/ instead); scratch files
# (the request body, the server's log) stay in bench/out/, which is not committed.
set -euo pipefail
cd "$(dirname "$0")/.."

case_file="${1:-../shared/vignettes-2026.2/ivc-middle-postop-r1.json}"
duration="${2:-8}"

if [ -z "${VLMS_RT_TEST_POSTGRES_URL:-}" ]; then
    exec bash scripts/with-postgres bash "$0" "$@"
fi

command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl missing" >&2; exit 1; }
[ -f "$case_file" ] || { echo "$case_file: no such case file" >&2; exit 2; }
[[ "$duration" =~ ^[1-9][0-9]*$ ]] || { echo "DURATION_SECONDS must be a positive whole number" >&2; exit 2; }

# shellcheck source=bench/common.sh
source bench/common.sh
start_run_file audit-postgres "${LABEL:-1x1-16x32}" LABEL RUSTFLAGS -- "$@"
trap 'finish_run_file $?' EXIT

cargo build --release --locked --bin vlms-rt-server --example grpc_body >&2
bin="${CARGO_TARGET_DIR:-target}/release" # where cargo just built them
out=bench/out
mkdir -p "$out"
"$bin/examples/grpc_body" "$case_file" "$out/body.bin"

database="vlms_bench_$$"
psql -q "$VLMS_RT_TEST_POSTGRES_URL" -c "CREATE DATABASE $database"
url="${VLMS_RT_TEST_POSTGRES_URL%/*}/$database?sslmode=require"

port=$(free_port); metrics_port=$(free_port)
"$bin/vlms-rt-server" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port" \
    --max-concurrent-calls 4096 --audit-db "$url" --audit-db-ca "$VLMS_RT_TEST_POSTGRES_CA" \
    2> "$out/server-postgres.log" &
server_pid=$!
trap 'status=$?; kill $server_pid 2>/dev/null || true; finish_run_file $status' EXIT
wait_port "$port"

echo "case ${case_file##*/}; release build; ${duration} s per level after 1 s of warm-up; PostgreSQL $(psql -tA "$VLMS_RT_TEST_POSTGRES_URL" -c 'SHOW server_version' | cut -d' ' -f1) on the same machine, TLS"
printf '| connections x streams | audit on (PostgreSQL) req/s |\n|---|---|\n'
for level in "1 1" "16 32"; do
    read -r connections streams <<< "$level"
    rps=$(h2load -D "$duration" --warm-up-time=1 -c "$connections" -m "$streams" -t 1 \
        -H 'content-type: application/grpc' -H 'te: trailers' -d "$out/body.bin" \
        "http://127.0.0.1:$port/vlms.rt.v1.RecommendationService/Recommend" | awk '/^finished in/ {print $4}')
    printf '| %s x %s | %.0f |\n' "$connections" "$streams" "$rps"
done

ok=$(metric "$metrics_port" 'vlms_rt_calls_total{code="OK",rpc="Recommend"}')
all=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^vlms_rt_calls_total\{/ {sum += $2} END {print sum}')
batches=$(metric "$metrics_port" vlms_rt_audit_batches)
records=$(metric "$metrics_port" vlms_rt_audit_records)
largest=$(metric "$metrics_port" vlms_rt_audit_largest_batch)
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
echo
echo "calls answered OK: $ok of $all; records $records in $batches transactions (mean $(python3 -c "print(f'{$records / max($batches, 1):.1f}')") per batch, largest $largest)"
"$bin/vlms-rt-server" audit verify --audit-db "$url" --audit-db-ca "$VLMS_RT_TEST_POSTGRES_CA"
if [ "$ok" != "$all" ]; then echo "NOT ALL CALLS ANSWERED OK" >&2; exit 1; fi
