#!/usr/bin/env python3
# overhead-ir.py: what the counters, the watchdog and the flight recorder cost
# per echo request, in instructions, which a 2-core VM measures exactly where
# its CPU time per request wanders by 10 % from run to run.
#
# Usage: overhead-ir.py NAME=ECHO_CMD [NAME=ECHO_CMD ...]
#   e.g. overhead-ir.py "evloop=target/release/examples/echo" \
#          "counters_only=target/release/examples/echo --slow-callback 0 --trace-events 0" \
#          "base=/tmp/base/target/release/examples/echo"
#
# For each server: runs it under cachegrind (valgrind --tool=cachegrind
# --cache-sim=no, which counts the user-space instructions it executes), drives
# it with tools/loadgen echo (64 B, 100 connections, paced at 2,000 req/s, 1 s
# of warm-up) for a short and a long window, and reports the difference of the
# instructions over the difference of the requests: the instructions one more
# request costs, with start-up, warm-up and shutdown cancelled out. Then, for
# the first server (started with --admin, so it must be an evloop echo of a
# build that has it), a native run paced at 50,000 req/s for 10 s: the share
# of its CPU time spent in user space (utime over utime + stime from
# /proc/PID/stat), what turns an instruction count into a share of the CPU per
# request, and the turns and events per request, from its own /metrics before
# and after. Kernel work per request is the same for every row (the same
# system calls). Needs valgrind (apt-get install valgrind).
# Loopback only; each run is bounded in requests and time.
import json, os, shutil, signal, socket, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
RATE = 2000
SHORT, LONG = 3, 9   # seconds of the two windows


def start(argv, prefix=(), kinds=("tcp",)):
    """Starts the server; (process, {kind: address}) once every kind in
    `kinds` is announced."""
    extra = ["--admin", "127.0.0.1:0"] if "admin" in kinds else []
    p = subprocess.Popen([*prefix, *argv, "--tcp", "127.0.0.1:0", *extra], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    addrs = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and set(kinds) - set(addrs):
        line = p.stdout.readline()
        if not line:
            break
        words = line.split()
        if len(words) == 3 and words[0] == "listening":
            addrs[words[1]] = words[2]
    if set(kinds) - set(addrs):
        p.kill()
        sys.exit(f"overhead-ir: {argv[0]} did not announce {', '.join(kinds)}")
    return p, addrs


def stop(p):
    p.send_signal(signal.SIGTERM)
    try:
        p.wait(60)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait()


def loadgen(addr, pid, rate, seconds):
    out = subprocess.run([LOADGEN, "echo", "--tcp", addr, "--conns", "100", "--size", "64",
                          "--depth", "1", "--rate", str(rate), "--duration", str(seconds),
                          "--warmup", "1", "--pid", str(pid)],
                         capture_output=True, text=True, timeout=seconds + 120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if out.returncode != 0 or result.get("errors"):
        sys.exit(f"overhead-ir: loadgen failed: {out.stderr.strip()}")
    return result


def instructions(argv, seconds):
    """(user-space instructions of the whole run, requests in the window)."""
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "cachegrind.out")
        p, addrs = start(argv, ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                                f"--cachegrind-out-file={out}"])
        try:
            result = loadgen(addrs["tcp"], p.pid, RATE, seconds)
        finally:
            stop(p)
        with open(out) as f:
            summary = next(line for line in f if line.startswith("summary:"))
        return int(summary.split()[1]), result["requests"]


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])   # utime, stime


def counters(addr):
    """The evloop_* samples of /metrics (summed over shards), but the
    histogram's."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(b"GET /metrics HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
        text = b""
        while chunk := sock.recv(65536):
            text += chunk
    values = {}
    for line in text.decode().split("\r\n\r\n", 1)[1].splitlines():
        if line.startswith("evloop_") and not line.startswith("evloop_turn_duration"):
            name, value = line.rsplit(" ", 1)
            name = name.split("{")[0]
            values[name] = values.get(name, 0.0) + float(value)
    return values


def native_run(argv):
    """(user share of the server's CPU, its µs per request, turns and events
    per request, the other processes' CPU meanwhile in cores)."""
    p, addrs = start(argv, kinds=("tcp", "admin"))
    try:
        before = counters(addrs["admin"])
        u0, s0 = ticks(p.pid)
        others0, t0 = others(p.pid), time.monotonic()
        result = loadgen(addrs["tcp"], p.pid, 50000, 10)
        others1, t1 = others(p.pid), time.monotonic()
        u1, s1 = ticks(p.pid)
        after = counters(addrs["admin"])
    finally:
        stop(p)
    user, system = u1 - u0, s1 - s0
    # Every request is 64 bytes in: the requests of the warm-up count too.
    requests = (after["evloop_bytes_read_total"] - before["evloop_bytes_read_total"]) / 64
    per_request = {name: (after[name] - before[name]) / requests
                   for name in ("evloop_turns_total", "evloop_events_total")}
    other = sum(n - others0.get(pid, 0) for pid, n in others1.items()) / os.sysconf("SC_CLK_TCK") / (t1 - t0)
    return user / (user + system), result["server_us_per_req"], per_request, other


def others(server):
    """{pid: utime + stime} of every user-space process but the server and
    this script (loadgen, which ran meanwhile, is not there at either
    reading). Kernel threads are left out: ksoftirqd runs the benchmark's
    own loopback work."""
    ticks_of = {}
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) not in (server, os.getpid()):
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if not int(fields[6]) & 0x00200000:   # PF_KTHREAD
                    ticks_of[int(name)] = int(fields[11]) + int(fields[12])
            except (OSError, IndexError, ValueError):
                pass   # a process that just ended
    return ticks_of


def main():
    if shutil.which("valgrind") is None:
        sys.exit("overhead-ir: needs valgrind (apt-get install valgrind)")
    rows = [arg.split("=", 1) for arg in sys.argv[1:]]
    if not rows or any(len(r) != 2 for r in rows):
        sys.exit("usage: overhead-ir.py NAME=ECHO_CMD [NAME=ECHO_CMD ...]")
    per_request = {}
    for name, cmd in rows:
        argv = cmd.split()
        ir_short, req_short = instructions(argv, SHORT)
        ir_long, req_long = instructions(argv, LONG)
        per_request[name] = (ir_long - ir_short) / (req_long - req_short)
        print(f"{name}: {ir_short:,} Ir / {req_short:,} requests, {ir_long:,} Ir / {req_long:,} requests",
              file=sys.stderr, flush=True)
    share, us, per_request_counts, other = native_run(rows[0][1].split())
    first = rows[0][0]
    print(f"\n{first} at 50,000 req/s natively: {us:.2f} µs of CPU per request, "
          f"{share * 100:.1f} % of it in user space; "
          f"{per_request_counts['evloop_turns_total']:.2f} turns and "
          f"{per_request_counts['evloop_events_total']:.2f} events per request; "
          f"other processes {other:.3f} cores meanwhile\n")
    ref = rows[-1][0]
    print(f"| server | user-space instructions per request | vs {ref} | "
          f"share of the CPU per request (user share {share * 100:.1f} %) |")
    print("|---|---|---|---|")
    for name, ir in per_request.items():
        extra = ir / per_request[ref] - 1
        print(f"| {name} | {ir:,.0f} | {ir / per_request[ref]:.3f} | {extra * share * 100:+.2f} % |")


if __name__ == "__main__":
    main()
