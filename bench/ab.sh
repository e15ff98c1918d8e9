#!/usr/bin/env bash
# A/B benchmark of server builds or settings on unary Recommend: each SPEC is run once per round,
# in alternating order from round to round (this 2-core machine drifts by 10-20% within minutes,
# so only runs close in time compare), every run on a fresh server process and, with auditing, a
# fresh SQLite file. Per run it reports req/s, the machine's idle share (I/O wait included: an
# audited server waiting on fsync shows there), and the CPU each of the
# server's threads (grouped by name) and h2load spent per call, from /proc and the shell's own
# `time`; and it checks with the server's own counters that every call was answered OK (h2load
# counts gRPC errors as successes). At the end: the median of each SPEC over the rounds, and with
# two SPECs the ratio of the first to the second, round by round (each round's pair ran back to back).
#
# Usage: bench/ab.sh SPEC [SPEC...]
#   SPEC   NAME=BINARY:AUDIT[:VAR=VALUE,...]   AUDIT is `file` (a fresh SQLite audit file per run) or
#          `none` (--audit-db none); the optional VAR=VALUE pairs go into the server's environment.
#          NAME labels the runs. Example, audit on against off with the release build:
#          bench/ab.sh on=target/release/vlms-rt-server:file off=target/release/vlms-rt-server:none
# Environment: ROUNDS (default 6), DURATION seconds measured per run (default 6, after 2 s of
#   warm-up), LEVEL connections x streams (default 16x32), CASE (default the IVC vignette used by
#   bench/load.sh), LABEL names the run (default the NAMEs and the level, e.g. on-off-16x32).
# Needs h2load (Debian package nghttp2-client) and curl.
# Writes what it prints to docs/perf/runs/<UTC date>-ab-<label>.txt, headed by the date, commit,
# machine and command line (a failed run goes to bench/out/ instead); scratch files (the request
# body, the servers' logs) stay in bench/out/, which is not committed. BINARY paths are written
# as given: give them relative to the repository.
set -euo pipefail
cd "$(dirname "$0")/.."

[ $# -ge 1 ] || { sed -n '/^# Usage/,/^set -euo/{/^#/p}' "$0" >&2; exit 2; }
rounds="${ROUNDS:-6}"
duration="${DURATION:-6}"
level="${LEVEL:-16x32}"
case_file="${CASE:-../shared/vignettes-2026.2/ivc-middle-postop-r1.json}"
warm_up=2
[[ "$level" =~ ^([1-9][0-9]*)x([1-9][0-9]*)$ ]] || { echo "LEVEL: '$level' is not CONNECTIONSxSTREAMS" >&2; exit 2; }
connections=${BASH_REMATCH[1]}
streams=${BASH_REMATCH[2]}
[[ "$rounds" =~ ^[1-9][0-9]*$ && "$duration" =~ ^[1-9][0-9]*$ ]] \
    || { echo "ROUNDS and DURATION must be positive whole numbers" >&2; exit 2; }
[ -f "$case_file" ] || { echo "CASE: $case_file: no such file" >&2; exit 2; }

names=() binaries=() audits=() environments=()
for spec in "$@"; do
    [[ "$spec" =~ ^([A-Za-z0-9_.-]+)=([^:]+):(file|none)(:(.*))?$ ]] \
        || { echo "SPEC '$spec' is not NAME=BINARY:file|none[:VAR=VALUE,...]" >&2; exit 2; }
    [ -x "${BASH_REMATCH[2]}" ] || { echo "${BASH_REMATCH[2]}: not an executable" >&2; exit 2; }
    for name in "${names[@]}"; do
        [ "$name" != "${BASH_REMATCH[1]}" ] || { echo "NAME '$name' given twice" >&2; exit 2; }
    done
    names+=("${BASH_REMATCH[1]}")
    binaries+=("${BASH_REMATCH[2]}")
    audits+=("${BASH_REMATCH[3]}")
    environments+=("${BASH_REMATCH[5]}")
done

command -v h2load >/dev/null || { echo "h2load missing: apt-get install nghttp2-client" >&2; exit 1; }
command -v curl >/dev/null || { echo "curl missing" >&2; exit 1; }

# shellcheck source=bench/common.sh
source bench/common.sh
label="${LABEL:-$(IFS=-; echo "${names[*]}")-$level}"
start_run_file ab "$label" ROUNDS DURATION LEVEL CASE LABEL -- "$@"
trap 'finish_run_file $?' EXIT

out=bench/out
mkdir -p "$out"
cargo run --quiet --release --locked --example grpc_body -- "$case_file" "$out/ab-body.bin"
ticks=$(getconf CLK_TCK)
calls() { # metrics port -> "ok all" (unary Recommend and every other RPC)
    curl -s "http://127.0.0.1:$1/metrics" | awk '
        /^vlms_rt_calls_total\{/ { all += $2; if ($1 ~ /code="OK"/) ok += $2 }
        END { print ok + 0, all + 0 }'
}
thread_ticks() { # pid -> "name=ticks" per thread name (utime + stime), one per line
    local task
    for task in /proc/"$1"/task/*; do
        # comm may hold spaces; the fields after it are counted from its closing parenthesis.
        awk -v comm="$(cat "$task/comm")" '{ sub(/^.*\) /, ""); print comm "=" $12 + $13 }' "$task/stat"
    done | awk -F= '{ t[$1] += $2 } END { for (n in t) print n "=" t[n] }'
}
idle_ticks() { awk '/^cpu / { print $5 + $6, $2 + $3 + $4 + $5 + $6 + $7 + $8 + $9 }' /proc/stat; }

results="$out/ab-results.txt"
: > "$results"
work=$(mktemp -d)
server_pid=
trap 'status=$?; if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi; rm -rf "$work"; finish_run_file $status' EXIT

echo "case ${case_file##*/}; $rounds rounds of ${duration} s (+${warm_up} s warm-up) per SPEC at $connections x $streams, alternating"
for i in "${!names[@]}"; do
    echo "${names[$i]}: ${binaries[$i]}, audit ${audits[$i]}${environments[$i]:+, environment ${environments[$i]}}"
done
for round in $(seq 1 "$rounds"); do
    order=$(seq 0 $(( ${#names[@]} - 1 )))
    (( round % 2 )) || order=$(echo "$order" | tac)
    for i in $order; do
        rm -rf "$work/db" && mkdir "$work/db"
        audit_db=none
        [ "${audits[$i]}" = file ] && audit_db="$work/db/audit.sqlite3"
        port=$(free_port); metrics_port=$(free_port)
        # shellcheck disable=SC2086 # the VAR=VALUE pairs, one word each
        env ${environments[$i]//,/ } "${binaries[$i]}" --listen "127.0.0.1:$port" \
            --metrics-listen "127.0.0.1:$metrics_port" --max-concurrent-calls 4096 \
            --audit-db "$audit_db" 2> "$out/ab-server-${names[$i]}.log" &
        server_pid=$!
        wait_port "$port"; wait_port "$metrics_port"
        read -r ok_before all_before <<< "$(calls "$metrics_port")"
        before=$(thread_ticks "$server_pid")
        read -r idle_before total_before <<< "$(idle_ticks)"
        TIMEFORMAT='%U %S'
        if ! { time h2load -D "$duration" --warm-up-time="$warm_up" -c "$connections" -m "$streams" -t 1 \
            -H 'content-type: application/grpc' -H 'te: trailers' -d "$out/ab-body.bin" \
            "http://127.0.0.1:$port/vlms.rt.v1.RecommendationService/Recommend" > "$work/h2load.txt" ; } 2> "$work/h2load-time.txt"; then
            echo "h2load failed (${names[$i]}, round $round):" >&2
            cat "$work/h2load.txt" "$work/h2load-time.txt" >&2
            exit 1
        fi
        if ! kill -0 "$server_pid" 2>/dev/null; then
            echo "the server of ${names[$i]} exited during round $round; its log:" >&2
            tail -n 20 "$out/ab-server-${names[$i]}.log" >&2
            exit 1
        fi
        read -r idle_after total_after <<< "$(idle_ticks)"
        after=$(thread_ticks "$server_pid")
        read -r ok_after all_after <<< "$(calls "$metrics_port")"
        kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=
        rate=$(awk '/^finished in/ { print $4 }' "$work/h2load.txt")
        [ -n "$rate" ] || { echo "h2load gave no rate:" >&2; cat "$work/h2load.txt" >&2; exit 1; }
        answered=$(( all_after - all_before ))
        ok=$(( ok_after - ok_before ))
        if [ "$answered" = 0 ] || [ "$ok" != "$answered" ]; then
            echo "${names[$i]}, round $round: $ok of $answered calls answered OK" >&2; exit 1
        fi
        # CPU per call over the whole h2load run, warm-up included (the calls counted likewise).
        line=$(python3 - "$ticks" "$answered" "$(tail -n 1 "$work/h2load-time.txt")" "$before" "$after" <<'PY'
import sys
ticks, calls, h2load = int(sys.argv[1]), int(sys.argv[2]), sum(map(float, sys.argv[3].split()))
parse = lambda text: dict(line.rsplit("=", 1) for line in text.split("\n") if "=" in line)
before, after = parse(sys.argv[4]), parse(sys.argv[5])
per_call = lambda seconds: seconds / calls * 1e6
threads = sorted((name, per_call((int(t) - int(before.get(name, 0))) / ticks)) for name, t in after.items())
server = sum(us for _, us in threads)
print(f"server {server:.1f} us/call (" + ", ".join(f"{name} {us:.1f}" for name, us in threads if us >= 0.05)
      + f"); h2load {per_call(h2load):.1f} us/call")
PY
)
        idle=$(( (idle_after - idle_before) * 100 / (total_after - total_before) ))
        echo "round $round ${names[$i]}: $rate req/s, idle $idle%, $line, $ok calls OK"
        echo "${names[$i]} $round $rate" >> "$results"
    done
done

python3 - "$results" "${names[@]}" <<'PY'
import statistics, sys
rows = [line.split() for line in open(sys.argv[1]) if line.strip()]
names = sys.argv[2:]
rates = {name: {int(r): float(v) for n, r, v in rows if n == name} for name in names}
print()
for name in names:
    values = sorted(rates[name].values())
    print(f"{name}: median {statistics.median(values):.0f} req/s (rounds {values[0]:.0f}-{values[-1]:.0f})")
if len(names) == 2:
    a, b = names
    ratios = [rates[a][r] / rates[b][r] for r in sorted(rates[a])]
    print(f"{a}/{b} by round: " + " ".join(f"{x:.2f}" for x in ratios)
          + f"; median {statistics.median(ratios):.2f}")
PY
