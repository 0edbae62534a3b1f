#!/usr/bin/env bash
# A bounded soak run of the demo server (echo, chat, plain files and HTTP on
# one thread) under mixed load from tools/loadgen, all on
# loopback. Prints the server's descriptor count and RSS at the start, every
# SAMPLE seconds, and at the end, then each loadgen's JSON line.
#
# Run from the repository root after `cargo build --release --bins --examples`
# (the examples and target/release/loadgen):
#   docs/bench/soak.sh            # DUR=300 seconds by default
set -euo pipefail
DEMO=${DEMO:-$PWD/target/release/examples/demo}
LOADGEN=${LOADGEN:-$PWD/target/release/loadgen}
DATA=${BENCH_DATA:-$PWD/target/bench/data}
DUR=${DUR:-300}
SAMPLE=${SAMPLE:-30}
LARGE=10485760

mkdir -p "$DATA"
[ -f "$DATA/large.bin" ] || head -c "$LARGE" /dev/urandom > "$DATA/large.bin"
WORK=$(mktemp -d /tmp/evloop-soak.XXXXXX)
pid=""
cleanup() {
    if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

taskset -c 0 "$DEMO" --root "$DATA" --echo 127.0.0.1:0 --echo-udp 127.0.0.1:0 --chat 127.0.0.1:0 \
    --files 127.0.0.1:0 --http 127.0.0.1:0 >"$WORK/demo.out" 2>"$WORK/demo.err" &
pid=$!
for _ in $(seq 100); do
    [ "$(grep -c '^listening' "$WORK/demo.out")" -ge 5 ] && break
    sleep 0.1
done
mapfile -t tcp < <(awk '/^listening tcp/ {print $3}' "$WORK/demo.out")
http=$(awk '/^listening http/ {print $3}' "$WORK/demo.out")
echo_addr=${tcp[0]} chat_addr=${tcp[1]} files_addr=${tcp[2]}

sample() {
    local fds rss
    fds=$(ls "/proc/$pid/fd" | wc -l)
    rss=$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status")
    printf '%-6s fds=%s rss_kib=%s\n' "$1" "$fds" "$rss"
}

sample start
L="taskset -c 1 $LOADGEN"
$L echo --tcp "$echo_addr" --conns 100 --size 512 --depth 1 --rate 10000 --duration "$DUR" \
    --pid "$pid" >"$WORK/echo.json" &
$L chat --tcp "$chat_addr" --receivers 100 --senders 5 --rate 200 --duration "$DUR" \
    --pid "$pid" >"$WORK/chat.json" &
$L download --tcp "$files_addr" --name large.bin --conns 4 --expect-bytes "$LARGE" \
    --duration "$DUR" --proto plain >"$WORK/plain.json" &
$L download --tcp "$http" --name large.bin --conns 4 --expect-bytes "$LARGE" \
    --duration "$DUR" --proto http >"$WORK/http.json" &
start=$(date +%s)
while [ $(( $(date +%s) - start )) -lt "$DUR" ]; do
    sleep "$SAMPLE"
    sample "$(( $(date +%s) - start ))s"
done
wait_status=0
for job in $(jobs -p); do
    [ "$job" = "$pid" ] && continue
    wait "$job" || wait_status=$?
done
sleep 3
sample end
for f in echo chat plain http; do
    printf '%s: %s\n' "$f" "$(cat "$WORK/$f.json")"
done
echo "loadgen exit status: $wait_status"
echo "server warnings and errors:"
grep -cE 'WARN|ERROR' "$WORK/demo.err" || true
