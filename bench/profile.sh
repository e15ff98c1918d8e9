#!/usr/bin/env bash
# Where the server's CPU goes per unary Recommend, audit trail on (a fresh SQLite file) and off,
# at one load level: each server is loaded by h2load while `perf record --call-graph dwarf`
# samples it for a window in the middle of the run; bench/cpu-breakdown.py then sorts the samples
# into categories (audit zstd, audit SQLite, plan encoding, h2, kernel, …) and gives each as
# microseconds of server CPU per call answered in that window, with the difference between the two.
# One profile per server, so expect ±10% per category: this says where the time goes, A/B runs
# (bench/ab.sh) say how much a change gains.
#
# Usage: bench/profile.sh
# Environment: LEVEL connections x streams (default 16x32), SAMPLE_SECONDS (default 4), HZ
#   samples per second (default 499), CASE (default the IVC vignette of bench/load.sh), LABEL.
# Needs perf (Debian package linux-perf, and kernel.perf_event_paranoid ≤ 1 or root), h2load
# (nghttp2-client) and curl. The release build carries debug info, which perf needs for stacks.
# Writes what it prints to docs/perf/runs/<UTC date>-profile-<label>.txt; scratch files stay in
# bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."

level="${LEVEL:-16x32}"
seconds="${SAMPLE_SECONDS:-4}"
hz="${HZ:-499}"
case_file="${CASE:-../shared/vignettes-2026.2/ivc-middle-postop-r1.json}"
[[ "$level" =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || { echo "LEVEL: '$level' is not CONNECTIONSxSTREAMS" >&2; exit 2; }
connections=${BASH_REMATCH[1]}
streams=${BASH_REMATCH[2]}
[[ "$seconds" =~ ^[1-9][0-9]*$ && "$hz" =~ ^[1-9][0-9]*$ ]] || { echo "SAMPLE_SECONDS and HZ must be positive whole numbers" >&2; exit 2; }
[ -f "$case_file" ] || { echo "CASE: $case_file: no such file" >&2; exit 2; }
for tool in perf h2load curl; do
    command -v "$tool" >/dev/null || { echo "$tool missing" >&2; exit 1; }
done

# shellcheck source=bench/common.sh
source bench/common.sh
out=bench/out
mkdir -p "$out"
cargo build --quiet --release --locked --bin vlms-rt-server
cargo run --quiet --release --locked --example grpc_body -- "$case_file" "$out/profile-body.bin"
label="${LABEL:-$level}"
start_run_file profile "$label" LEVEL SAMPLE_SECONDS HZ CASE LABEL --
work=$(mktemp -d)
server_pid=
trap 'status=$?; if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"; finish_run_file $status' EXIT

calls() { # metrics port -> "ok all": calls answered OK so far, and all calls (h2load counts a
    # gRPC error as a success, so the server's own counters are checked)
    curl -s "http://127.0.0.1:$1/metrics" | awk '
        /^vlms_rt_calls_total\{/ { all += $2; if ($1 ~ /code="OK"/) ok += $2 }
        END { print ok + 0, all + 0 }'
}

echo "case ${case_file##*/}, $connections x $streams, $seconds s sampled at $hz Hz per server"
arguments=()
for audit in on off; do
    audit_db=none
    [ "$audit" = on ] && audit_db="$work/audit.sqlite3"
    port=$(free_port); metrics_port=$(free_port)
    "${CARGO_TARGET_DIR:-target}/release/vlms-rt-server" --listen "127.0.0.1:$port" --metrics-listen "127.0.0.1:$metrics_port" \
        --max-concurrent-calls 4096 --audit-db "$audit_db" 2> "$out/profile-server-$audit.log" &
    server_pid=$!
    wait_port "$port"; wait_port "$metrics_port"
    h2load -D $((seconds + 4)) -c "$connections" -m "$streams" -t 1 \
        -H 'content-type: application/grpc' -H 'te: trailers' -d "$out/profile-body.bin" \
        "http://127.0.0.1:$port/vlms.rt.v1.RecommendationService/Recommend" > "$work/h2load-$audit.txt" &
    load_pid=$!
    sleep 2 # warm-up: connections open, caches and the audit file's first pages in place
    read -r before _ <<< "$(calls "$metrics_port")"
    perf record --quiet -F "$hz" --call-graph dwarf,16384 -p "$server_pid" -o "$work/perf-$audit.data" \
        -- sleep "$seconds" 2> "$work/perf-$audit.log"
    read -r after _ <<< "$(calls "$metrics_port")"
    wait "$load_pid"
    read -r ok all <<< "$(calls "$metrics_port")"
    [ "$ok" = "$all" ] || { echo "audit $audit: $ok of $all calls answered OK" >&2; exit 1; }
    kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
    rate=$(awk '/^finished in/ { print $4 }' "$work/h2load-$audit.txt")
    [ "$after" -gt "$before" ] || { echo "audit $audit: no call was answered while perf sampled" >&2; exit 1; }
    echo "audit $audit: $rate req/s over the run; $((after - before)) calls answered OK while sampled"
    perf script -i "$work/perf-$audit.data" > "$work/script-$audit.txt" 2> /dev/null
    arguments+=("$audit=$work/script-$audit.txt:$((after - before)):$hz")
done
python3 bench/cpu-breakdown.py "${arguments[@]}"
