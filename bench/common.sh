# Helpers shared by the benchmark scripts (sourced, not run): ports on loopback and the server's
# Prometheus series.

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
