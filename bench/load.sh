#!/usr/bin/env bash
# Load benchmark: vlms-rt-server (auditing off) against a bare tonic echo server (the yardstick)
# with the same h2load settings, back to back, on loopback; then the service with its SQLite audit
# trail on against the same service with auditing off. Reports requests/s, p50/p99 latency, the
# ratios, audit batch sizes and the server's peak RSS; checks separately that every call answered
# OK (h2load counts gRPC errors as successes), using the server's own call counters. RecommendStream
# is driven by h2load too (1,000-case stream bodies, 1 and 2 concurrent streams, 16 and 64 KiB frames,
# every stream checked for 1,000 plans by the same counters), then once more through one tonic
# client (stream_bench).
#
# Each level runs ROUNDS times (default 3), the two servers back to back in each round, alternating
# which goes first; the table gives medians, and the ratio is the median of the rounds' ratios with
# their range (this 2-core machine's runs move by 10-20% from one minute to the next).
#
# Usage: bench/load.sh [CASE.json] [DURATION_SECONDS] [ROUNDS]
# Environment: LEVELS="16x32 4x8" measures only those connections x streams levels (default
# "1x1 4x8 16x32"); AUDIT=0 leaves out the audit-on/off comparison; ECHO_NO_LIFO=1 gives the echo
# server the service's scheduling (tokio's LIFO slot off); LABEL names the run (default the levels,
# e.g. 1x1-4x8-16x32).
# Needs h2load (Debian package nghttp2-client) and curl.
# Writes what it prints to docs/perf/runs/<UTC date>-load-<label>.txt, headed by the date, commit,
# machine and command line (a failed run goes to bench/out/ instead); scratch files (request
# bodies, server logs, h2load's own output) stay in bench/out/, which is not committed.
set -euo pipefail
cd "$(dirname "$0")/.."

case_file="${1:-../shared/vignettes-2026.2/ivc-middle-postop-r1.json}"
duration="${2:-10}"
rounds="${3:-3}"
warm_up=2
levels=()
for level in ${LEVELS:-1x1 4x8 16x32}; do
    [[ "$level" =~ ^[1-9][0-9]*x[1-9][0-9]*$ ]] || { echo "LEVELS: '$level' is not CONNECTIONSxSTREAMS" >&2; exit 2; }
    levels+=("${level%x*} ${level#*x}")
done
out=bench/out
mkdir -p "$out"
rm -f "$out"/median-* # medians of an earlier run must not stand in for a level this run skips

command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl missing" >&2; exit 1; }
# The stream runs set the largest frame h2load accepts (-f, nghttp2 1.47 or later).
h2load --help 2>&1 | grep -- '--max-frame-size' > /dev/null \
    || { echo "this h2load has no --max-frame-size (-f): nghttp2 1.47 or later is needed" >&2; exit 1; }
[ -f "$case_file" ] || { echo "$case_file: no such case file" >&2; exit 2; }
[[ "$duration" =~ ^[1-9][0-9]*$ && "$rounds" =~ ^[1-9][0-9]*$ ]] \
    || { echo "DURATION_SECONDS and ROUNDS must be positive whole numbers" >&2; exit 2; }
# The latency percentiles leave out the first $warm_up s of h2load's log.
(( duration > warm_up )) || { echo "DURATION_SECONDS must be more than $warm_up" >&2; exit 2; }

# shellcheck source=bench/common.sh
source bench/common.sh
label="${LABEL:-$(echo ${LEVELS:-1x1 4x8 16x32} | tr ' ' -)}"
start_run_file load "$label" LEVELS AUDIT ECHO_NO_LIFO LABEL RUSTFLAGS -- "$@"
trap 'finish_run_file $?' EXIT
cargo build --release --locked --bin vlms-rt-server --bin vlms-rt --example echo_server --example grpc_body --example stream_bench >&2

bin="${CARGO_TARGET_DIR:-target}/release" # where cargo just built them
"$bin/examples/grpc_body" "$case_file" "$out/body.bin"
stream_items=1000
"$bin/examples/grpc_body" "$case_file" "$out/stream-body.bin" "$stream_items"

percentiles() { # per-request log of h2load -> "p50_ms p99_ms" (warm-up requests left out)
    python3 - "$1" "$warm_up" <<'PY'
import sys
rows = [line.split("\t") for line in open(sys.argv[1]) if line.strip()]
first = min(int(row[0]) for row in rows)
measured = [row for row in rows if int(row[0]) >= first + int(sys.argv[2]) * 1_000_000]
times = sorted(int(row[2]) for row in measured)
pick = lambda q: times[min(len(times) - 1, int(q * len(times)))] / 1000.0
print(f"{pick(0.50):.3f} {pick(0.99):.3f}")
PY
}

run_h2load() { # port connections streams label -> "rps p50 p99 requests"
    local port=$1 connections=$2 streams=$3 label=$4
    local log="$out/$label-c$connections-m$streams.log"
    local report
    report=$(h2load -D "$duration" --warm-up-time="$warm_up" -c "$connections" -m "$streams" -t 1 \
        -H 'content-type: application/grpc' -H 'te: trailers' -d "$out/body.bin" \
        --log-file="$log" "http://127.0.0.1:$port/vlms.rt.v1.RecommendationService/Recommend")
    echo "$report" > "$out/$label-c$connections-m$streams.txt"
    local rps requests
    rps=$(echo "$report" | awk '/^finished in/ {print $4}')
    requests=$(echo "$report" | awk '/^requests:/ {print $8}')
    echo "$rps $(percentiles "$log") $requests"
}

compare() { # port_a label_a port_b label_b connections streams -> one table row, medians of rounds
    local port_a=$1 label_a=$2 port_b=$3 label_b=$4 connections=$5 streams=$6
    local rows=() round a b
    for round in $(seq 1 "$rounds"); do
        if (( round % 2 )); then
            a=$(run_h2load "$port_a" "$connections" "$streams" "$label_a-r$round")
            b=$(run_h2load "$port_b" "$connections" "$streams" "$label_b-r$round")
        else
            b=$(run_h2load "$port_b" "$connections" "$streams" "$label_b-r$round")
            a=$(run_h2load "$port_a" "$connections" "$streams" "$label_a-r$round")
        fi
        rows+=("$a $b")
    done
    # The first server's median req/s, for the RecommendStream ratios below.
    printf '%s\n' "${rows[@]}" | awk '{print $1}' | sort -g | awk '{v[NR]=$1} END {print (NR % 2) ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2}' \
        > "$out/median-$label_a-c$connections-m$streams"
    python3 - "$connections" "$streams" "${rows[@]}" <<'PY'
import statistics, sys
connections, streams, rows = sys.argv[1], sys.argv[2], [list(map(float, r.split())) for r in sys.argv[3:]]
med = lambda i: statistics.median(row[i] for row in rows)
ratios = sorted(row[0] / row[4] for row in rows)
print(f"| {connections} x {streams} | {med(0):.0f} | {med(1):.3f} | {med(2):.3f} | {med(4):.0f} | {med(5):.3f} | "
      f"{med(6):.3f} | {statistics.median(ratios):.2f} ({ratios[0]:.2f}-{ratios[-1]:.2f}) |")
PY
}

server_port=$(free_port); metrics_port=$(free_port); echo_port=$(free_port)
"$bin/vlms-rt-server" --listen "127.0.0.1:$server_port" --metrics-listen "127.0.0.1:$metrics_port" \
    --max-concurrent-calls 4096 --audit-db none 2> "$out/server.log" &
server_pid=$!
"$bin/examples/echo_server" "127.0.0.1:$echo_port" "$case_file" 2> "$out/echo.log" &
echo_pid=$!
trap 'status=$?; kill $server_pid $echo_pid 2>/dev/null || true; finish_run_file $status' EXIT
wait_port "$server_port"; wait_port "$echo_port"

# The service's answer for this case must be a correct plan before anything is measured.
"$bin/vlms-rt" --server "http://127.0.0.1:$server_port" --output json recommend "$case_file" > "$out/plan.json"

echo "case ${case_file##*/}; release build; medians of $rounds rounds of ${duration} s per server and level"
printf '| connections x streams | service req/s | p50 ms | p99 ms | echo req/s | p50 ms | p99 ms | service/echo (range) |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for level in "${levels[@]}"; do
    read -r connections streams <<< "$level"
    compare "$server_port" service "$echo_port" echo "$connections" "$streams"
done

ok=$(metric "$metrics_port" 'vlms_rt_calls_total{code="OK",rpc="Recommend"}')
all=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^vlms_rt_calls_total\{/ {sum += $2} END {print sum}')
peak_kib=$(awk '/^VmHWM:/ {print $2}' "/proc/$server_pid/status")
echo
echo "service calls answered OK: $ok of $all (every status counted by the server)"
echo "server peak RSS: $((peak_kib / 1024)) MiB ($peak_kib KiB)"
if [ "$ok" != "$all" ]; then echo "NOT ALL CALLS ANSWERED OK" >&2; exit 1; fi

# RecommendStream with the same load generator as the unary calls: h2load sends the body of a
# 1,000-case stream (the case's request framed 1,000 times over) as one call per stream and, as for
# Recommend, decodes nothing. Every stream must end OK with 1,000 plans (the server's counters).
# Each level runs twice: with h2load's default largest frame (16 KiB, the HTTP/2 default) and with
# 64 KiB frames advertised (-f 64K), as the bundled client does (client::MAX_FRAME_SIZE). h2 writes
# each DATA frame with a system call of its own, so the frame size sets the writes per plan.
stream_rate() { # port connections frame label -> plans/s (h2load: one stream at a time per connection)
    local port=$1 connections=$2 frame=$3 label=$4 streams report
    streams=$((connections * duration * 100))
    h2load -n "$connections" -c "$connections" -m 1 -t 1 -f "$frame" -H 'content-type: application/grpc' -H 'te: trailers' \
        -d "$out/stream-body.bin" "http://127.0.0.1:$port/vlms.rt.v1.RecommendationService/RecommendStream" > /dev/null
    report=$(h2load -n "$streams" -c "$connections" -m 1 -t 1 -f "$frame" -H 'content-type: application/grpc' -H 'te: trailers' \
        -d "$out/stream-body.bin" "http://127.0.0.1:$port/vlms.rt.v1.RecommendationService/RecommendStream")
    echo "$report" > "$out/$label-c$connections.txt"
    local rate
    rate=$(echo "$report" | awk -v items="$stream_items" '/^finished in/ {printf "%.0f\n", $4 * items}')
    # A round without a rate must not silently leave the median to the others.
    [ -n "$rate" ] || { echo "h2load reported no rate for $label (see $out/$label-c$connections.txt)" >&2; exit 1; }
    echo "$rate"
}
plans_sum() { curl -s "http://127.0.0.1:$1/metrics" | awk '/^vlms_rt_plans_total\{/ {sum += $2} END {print sum + 0}'; }
stream_ok() { metric "$1" 'vlms_rt_calls_total{code="OK",rpc="RecommendStream"}' | awk '{v = $1} END {print v + 0}'; }
plans_before=$(plans_sum "$metrics_port"); streams_before=$(stream_ok "$metrics_port")
echo
echo "RecommendStream, ${stream_items}-case streams through h2load (one stream per connection at a time), $rounds rounds:"
printf '| concurrent streams | largest frame | plans/s (median) | range | / unary 1 x 1 | / unary %s (the last level) |\n' "${levels[-1]// / x }"
printf '|---|---|---|---|---|---|\n'
unary_one=$(cat "$out/median-service-c1-m1" 2>/dev/null || echo 0)
unary_top=$(cat "$out/median-service-c${levels[-1]% *}-m${levels[-1]#* }")
frames=(16K 64K)
declare -A rates # "frame connections" -> the rounds' plans/s
for connections in 1 2; do # (streams_sent below counts these levels)
    for round in $(seq 1 "$rounds"); do
        # Both frame sizes in every round, in alternating order, so that the machine's drift
        # during the run does not fall on one of them.
        order=("${frames[@]}")
        (( round % 2 )) || order=("${frames[1]}" "${frames[0]}")
        for frame in "${order[@]}"; do
            rates["$frame $connections"]+=" $(stream_rate "$server_port" "$connections" "$frame" "stream-f$frame-r$round")"
        done
    done
done
for frame in "${frames[@]}"; do
    for connections in 1 2; do
        # shellcheck disable=SC2086 # the rounds' rates, one argument each
        python3 - "$connections" "$frame" "$unary_one" "$unary_top" "$rounds" ${rates["$frame $connections"]} <<'PY'
import statistics, sys
connections, frame, one, top = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
rounds, rates = int(sys.argv[5]), sorted(map(float, sys.argv[6:]))
if len(rates) != rounds:
    sys.exit(f"{len(rates)} stream rates for {rounds} rounds")
med = statistics.median(rates)
ratio_one = f"{med / one:.1f}" if one else "(1 x 1 not measured)"
print(f"| {connections} | {frame[:-1]} KiB | {med:.0f} | {rates[0]:.0f}-{rates[-1]:.0f} | {ratio_one} | {med / top:.2f} |")
PY
    done
done
# Streams sent: per frame size, round and level, one warm-up stream per connection and the measured
# ones. A stream refused or cut short would be missing from the OK count, or short of plans.
streams_sent=$(( ${#frames[@]} * (rounds * (1 + 1 * duration * 100) + rounds * (2 + 2 * duration * 100)) ))
streams_done=$(( $(stream_ok "$metrics_port") - streams_before ))
plans_done=$(( $(plans_sum "$metrics_port") - plans_before ))
echo "streams answered OK: $streams_done of $streams_sent; plans in them: $plans_done (expected $((streams_sent * stream_items)))"
if [ "$streams_done" != "$streams_sent" ] || [ "$plans_done" != "$((streams_sent * stream_items))" ]; then
    echo "A STREAM WAS NOT ANSWERED OK WITH A PLAN FOR EVERY CASE" >&2; exit 1
fi

echo
"$bin/examples/stream_bench" "http://127.0.0.1:$server_port" "$case_file" 1000 5 | tail -1 | sed 's/^best/RecommendStream through one tonic client (stream_bench, 64 KiB frames), 1000-case stream, best of 5/'

if [ "${AUDIT:-1}" = 0 ]; then exit 0; fi

# Audit on (SQLite, WAL, synchronous=FULL, group commit) vs off, same settings.
audit_dir=$(mktemp -d)
audit_port=$(free_port); audit_metrics=$(free_port)
"$bin/vlms-rt-server" --listen "127.0.0.1:$audit_port" --metrics-listen "127.0.0.1:$audit_metrics" \
    --max-concurrent-calls 4096 --audit-db "$audit_dir/audit.sqlite3" 2> "$out/server-audit.log" &
audit_pid=$!
trap 'status=$?; kill $server_pid $echo_pid $audit_pid 2>/dev/null || true; rm -rf "$audit_dir"; finish_run_file $status' EXIT
wait_port "$audit_port"
echo
printf '| connections x streams | audit on req/s | p50 ms | p99 ms | audit off req/s | p50 ms | p99 ms | on/off (range) |\n'
printf '|---|---|---|---|---|---|---|---|\n'
for level in "${levels[@]}"; do
    read -r connections streams <<< "$level"
    compare "$audit_port" audit-on "$server_port" audit-off "$connections" "$streams"
done
a_ok=$(metric "$audit_metrics" 'vlms_rt_calls_total{code="OK",rpc="Recommend"}')
a_all=$(curl -s "http://127.0.0.1:$audit_metrics/metrics" | awk '/^vlms_rt_calls_total\{/ {sum += $2} END {print sum}')
batches=$(metric "$audit_metrics" vlms_rt_audit_batches)
records=$(metric "$audit_metrics" vlms_rt_audit_records)
largest=$(metric "$audit_metrics" vlms_rt_audit_largest_batch)
echo
echo "audited calls answered OK: $a_ok of $a_all; records $records in $batches transactions (mean $(python3 -c "print(f'{$records / max($batches, 1):.1f}')") per batch, largest $largest)"
echo "audited server peak RSS: $(( $(awk '/^VmHWM:/ {print $2}' "/proc/$audit_pid/status") / 1024 )) MiB; database $(du -h "$audit_dir/audit.sqlite3" | cut -f1)"
if [ "$a_ok" != "$a_all" ]; then echo "NOT ALL AUDITED CALLS ANSWERED OK" >&2; exit 1; fi
# The unaudited server served the "audit off" side too: its calls must all have been OK as well.
# (Recommend and the RecommendStream bench's calls alike.)
ok=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^vlms_rt_calls_total\{code="OK",/ {sum += $2} END {print sum}')
all=$(curl -s "http://127.0.0.1:$metrics_port/metrics" | awk '/^vlms_rt_calls_total\{/ {sum += $2} END {print sum}')
echo "unaudited server, whole run: $ok of $all calls answered OK"
if [ "$ok" != "$all" ]; then echo "NOT ALL CALLS ANSWERED OK" >&2; exit 1; fi
