#!/usr/bin/env bash
# HTTP file serving side by side: wrk against evloop's `file_server --http`
# and nginx (sendfile on, one process, tools/bench/peers/nginx.conf.in), on a
# small and a large file. Each server is pinned to CPU 0 and wrk to CPU 1;
# all traffic is on loopback; each wrk run lasts DUR seconds.
#
# Run from the repository root after `cargo build --release --examples`:
#   docs/bench/wrk-files.sh
# Needs: wrk, nginx, curl, taskset, python3. Prints one markdown table.
set -euo pipefail
EVLOOP=${EVLOOP:-$PWD/target/release/examples/file_server}
CONF=${CONF:-$PWD/tools/bench/peers/nginx.conf.in}
DATA=${BENCH_DATA:-$PWD/target/bench/data}
DUR=${DUR:-10}
SMALL_CONNS=${SMALL_CONNS:-50}
LARGE_CONNS=${LARGE_CONNS:-8}

mkdir -p "$DATA"
[ -f "$DATA/small.bin" ] || head -c 1024 /dev/urandom > "$DATA/small.bin"
[ -f "$DATA/large.bin" ] || head -c 10485760 /dev/urandom > "$DATA/large.bin"
WORK=$(mktemp -d /tmp/evloop-wrk.XXXXXX)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# name addr file conns
measure() {
    local out rps transfer p50 p99 errors
    out=$(taskset -c 1 wrk -t1 -c"$4" -d"${DUR}s" --latency "http://$2/$3")
    rps=$(awk '/^Requests\/sec/ {printf "%.0f", $2}' <<<"$out")
    transfer=$(awk '/^Transfer\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    errors=$(grep -E "Non-2xx|Socket errors" <<<"$out" | tr -s ' \n' ' ' || true)
    printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' \
        "$1" "$3" "$4" "$rps" "$transfer" "$p50" "$p99" "${errors:-0}"
}

start_nginx() {
    local port
    port=$(free_port)
    mkdir -p "$WORK/nginx"
    sed -e "s|@PREFIX@|$WORK/nginx|g" -e "s|@LISTEN@|127.0.0.1:$port|g" -e "s|@ROOT@|$DATA|g" \
        -e "s|@WORKERS@|1|g" -e "s|@MASTER@|off|g" -e "s|@USER@|$(id -un)|g" \
        -e "s|@ERROR_LOG@|$WORK/nginx/error.log|g" "$CONF" > "$WORK/nginx/nginx.conf"
    taskset -c 0 nginx -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" \
        </dev/null >"$WORK/nginx.out" 2>"$WORK/nginx.err" &
    pid=$!
    addr="127.0.0.1:$port"
    for _ in $(seq 100); do
        curl -s -o /dev/null "http://$addr/small.bin" && return 0
        sleep 0.1
    done
    echo "nginx did not start: $(cat "$WORK/nginx.err")" >&2
    exit 1
}

start_evloop() {
    : > "$WORK/evloop.out"
    taskset -c 0 "$EVLOOP" --http 127.0.0.1:0 --root "$DATA" >"$WORK/evloop.out" 2>"$WORK/evloop.err" &
    pid=$!
    for _ in $(seq 100); do
        addr=$(awk '/^listening http/ {print $3}' "$WORK/evloop.out")
        [ -n "$addr" ] && return 0
        sleep 0.1
    done
    echo "file_server did not start: $(cat "$WORK/evloop.err")" >&2
    exit 1
}

stop() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    pid=""
}

echo "| server | file | conns | req/s | transfer/s | p50 | p99 | errors |"
echo "|---|---|---|---|---|---|---|---|"
for run in "small.bin $SMALL_CONNS" "large.bin $LARGE_CONNS"; do
    read -r file conns <<<"$run"
    start_nginx
    measure nginx "$addr" "$file" "$conns"
    stop
    start_evloop
    measure evloop "$addr" "$file" "$conns"
    stop
done
