# Helpers shared by the benchmark scripts (sourced, not run): ports on loopback, the server's
# Prometheus series, and the run file each script writes under docs/perf/runs/.

# A TCP port free on 127.0.0.1 now.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'; }

# Waits up to 10 s for 127.0.0.1:PORT to accept connections; fails if it never does.
wait_port() {
    for _ in $(seq 1 200); do
        if (echo > "/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    echo "port $1 never opened" >&2
    return 1
}

# The value of one series (name with its labels, as exposed) on the metrics port.
metric() { curl -s "http://127.0.0.1:$1/metrics" | awk -v key="$2" '$1 == key {print $2}'; }

# The run file: docs/perf/runs/<UTC date>-<script>-<label>.txt (with -2, -3, … when the name is
# taken), headed by the date, the commit, the machine and the command line. From this call on,
# everything the script prints on standard output goes to the file as well as to the terminal;
# finish_run_file ends it. Sets run_file.
# Usage: start_run_file SCRIPT LABEL VARIABLE... -- ARGUMENT...
#   SCRIPT names the script (load, ab, audit-postgres); VARIABLE... are the environment variables
#   the script reads, written into the command line when set; ARGUMENT... are its arguments.
start_run_file() {
    local script=$1 label=$2
    shift 2
    [[ "$label" =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "LABEL: '$label' is not letters, digits, . _ -" >&2; exit 2; }
    local command=() variable
    while [ "$1" != -- ]; do
        variable=$1
        shift
        if [ -n "${!variable+set}" ]; then command+=("$variable=$(printf '%q' "${!variable}")"); fi
    done
    shift
    command+=(bash "bench/$script.sh")
    if [ $# -gt 0 ]; then command+=("$(printf '%q ' "$@")"); fi
    mkdir -p docs/perf/runs
    local stem number=1
    stem="docs/perf/runs/$(date -u +%Y-%m-%d)-$script-$label"
    run_file="$stem.txt"
    while [ -e "$run_file" ]; do
        number=$((number + 1))
        run_file="$stem-$number.txt"
    done
    local commit dirty=""
    commit=$(git log -1 --format='%h ("%s")' 2>/dev/null || echo "unknown")
    git diff --quiet HEAD 2>/dev/null || dirty=", with uncommitted changes"
    {
        echo "# bench/$script.sh, $(date -u +%Y-%m-%dT%H:%MZ)"
        echo "# commit: $commit$dirty"
        echo "# machine: $(machine_summary)"
        echo "# command: ${command[*]% }"
        echo "# load generator: $(h2load --version 2>/dev/null | head -n 1)"
    } > "$run_file"
    exec 3>&1 > >(tee -a "$run_file")
    run_tee=$!
}

# One line: CPU model, CPUs online, memory, kernel.
machine_summary() {
    local model memory
    model=$(lscpu 2>/dev/null | awk -F: '/^Model name/ {sub(/^[ \t]+/, "", $2); print $2; exit}')
    memory=$(awk '/^MemTotal:/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo)
    echo "${model:-unknown CPU}, $(nproc) CPUs, $memory, $(uname -sr)"
}

# Ends the run file; the script's EXIT trap calls it with the exit status, after stopping the
# servers it started (they share standard output with the file's writer, which ends only when
# they have). A run that failed is moved to bench/out/, so that docs/perf/runs/ holds only
# complete runs.
finish_run_file() {
    local status=$1
    [ -n "${run_file:-}" ] || return 0
    if [ "$status" = 0 ]; then echo "# finished $(date -u +%Y-%m-%dT%H:%MZ)"; fi
    exec 1>&3 3>&-
    wait "$run_tee" 2>/dev/null || true
    if [ "$status" = 0 ]; then
        echo "results: $run_file" >&2
    else
        mkdir -p bench/out
        mv "$run_file" "bench/out/failed-${run_file##*/}"
        echo "the run failed (exit status $status): its output is in bench/out/failed-${run_file##*/}" >&2
    fi
    run_file=
}
