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
# the first server, the share of its CPU time spent in user space (utime over
# utime + stime from /proc/PID/stat) in a native run paced at 50,000 req/s for
# 10 s: what turns an instruction count into a share of the CPU per request.
# Kernel work per request is the same for every row (the same system calls).
# Loopback only; each run is bounded in requests and time.
import json, os, re, signal, subprocess, sys, tempfile, time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
RATE = 2000
SHORT, LONG = 3, 9   # seconds of the two windows


def start(argv, prefix=()):
    p = subprocess.Popen([*prefix, *argv, "--tcp", "127.0.0.1:0"], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True, start_new_session=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        line = p.stdout.readline()
        if not line:
            break
        words = line.split()
        if len(words) == 3 and words[:2] == ["listening", "tcp"]:
            return p, words[2]
    p.kill()
    sys.exit(f"overhead-ir: {argv[0]} did not announce its tcp address")


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
        p, addr = start(argv, ["valgrind", "--tool=cachegrind", "--cache-sim=no",
                               f"--cachegrind-out-file={out}"])
        try:
            result = loadgen(addr, p.pid, RATE, seconds)
        finally:
            stop(p)
        with open(out) as f:
            summary = next(line for line in f if line.startswith("summary:"))
        return int(summary.split()[1]), result["requests"]


def ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]), int(fields[12])   # utime, stime


def user_share(argv):
    p, addr = start(argv)
    try:
        u0, s0 = ticks(p.pid)
        result = loadgen(addr, p.pid, 50000, 10)
        u1, s1 = ticks(p.pid)
    finally:
        stop(p)
    user, system = u1 - u0, s1 - s0
    return user / (user + system), result["server_us_per_req"]


def main():
    rows = [arg.split("=", 1) for arg in sys.argv[1:]]
    if not rows or any(len(r) != 2 for r in rows):
        sys.exit(__doc__ or "usage: overhead-ir.py NAME=ECHO_CMD ...")
    per_request = {}
    for name, cmd in rows:
        argv = cmd.split()
        ir_short, req_short = instructions(argv, SHORT)
        ir_long, req_long = instructions(argv, LONG)
        per_request[name] = (ir_long - ir_short) / (req_long - req_short)
        print(f"{name}: {ir_short:,} Ir / {req_short:,} requests, {ir_long:,} Ir / {req_long:,} requests",
              file=sys.stderr, flush=True)
    share, us = user_share(rows[0][1].split())
    first = rows[0][0]
    print(f"\n{first} at 50,000 req/s natively: {us:.2f} µs of CPU per request, "
          f"{share * 100:.1f} % of it in user space\n")
    ref = rows[-1][0]
    print(f"| server | user-space instructions per request | vs {ref} | "
          f"share of the CPU per request (user share {share * 100:.1f} %) |")
    print("|---|---|---|---|")
    for name, ir in per_request.items():
        extra = ir / per_request[ref] - 1
        print(f"| {name} | {ir:,.0f} | {ir / per_request[ref]:.3f} | {extra * share * 100:+.2f} % |")


if __name__ == "__main__":
    main()
