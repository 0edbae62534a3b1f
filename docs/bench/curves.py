#!/usr/bin/env python3
"""How echo's cost grows with the number of connections: evloop beside
tokio (current_thread) and the C epoll server, 64-byte requests at depth 1,
from 10 to 10,000 connections, one short closed-loop run per point.

Each server is pinned to CPU 0 and ../shared/bench's loadgen to CPU 1; all
traffic is on loopback and every run lasts --duration seconds. The script
prints a markdown table and writes an SVG chart (requests/s and server CPU
per request against connections, log scale) drawn here, from the numbers
of this run, with no plotting library.

Run from the repository root after `cargo build --release --examples` and
a build of the bench workspace (its run.sh builds it):

    python3 docs/bench/curves.py --svg docs/bench/echo-curve.svg
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONNS = [10, 100, 1000, 10000]
COLORS = {"evloop": "#d9480f", "tokio_ct": "#1971c2", "c_epoll": "#2f9e44"}


def servers(root, bench):
    return {
        "evloop": [f"{root}/target/release/examples/echo", "--tcp", "127.0.0.1:0"],
        "tokio_ct": [f"{bench}/target/release/tokio_echo", "--flavor", "current_thread",
                     "--addr", "127.0.0.1:0"],
        "c_epoll": [f"{bench}/build/c_epoll_echo", "127.0.0.1:0"],
    }


def start(command):
    """Starts a server on CPU 0; returns (process, tcp address)."""
    proc = subprocess.Popen(["taskset", "-c", "0", *command], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, text=True)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        words = line.split()
        if len(words) == 3 and words[0] == "listening" and words[1] == "tcp":
            return proc, words[2]
        if not line and proc.poll() is not None:
            break
    proc.kill()
    sys.exit(f"curves.py: {command[0]} did not announce a tcp address")


def stop(proc):
    proc.terminate()
    try:
        proc.wait(timeout=5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def measure(loadgen, command, conns, duration):
    proc, addr = start(command)
    try:
        out = subprocess.run(
            ["taskset", "-c", "1", loadgen, "echo", "--addr", addr, "--conns", str(conns),
             "--size", "64", "--depth", "1", "--duration", str(duration), "--warmup", "1",
             "--pid", str(proc.pid)],
            capture_output=True, text=True, timeout=duration + 120)
    finally:
        stop(proc)
    if out.returncode != 0:
        sys.exit(f"curves.py: loadgen failed at {conns} connections: {out.stderr.strip()}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    rps = result["rps"]
    return {
        "rps": rps,
        "p99_us": result["p99_us"],
        "errors": result["errors"],
        "srv_us_per_req": result["server_cpu"] / rps * 1e6 if rps else None,
    }


def log_x(conns, left, width):
    import math
    lo, hi = math.log10(CONNS[0]), math.log10(CONNS[-1])
    return left + (math.log10(conns) - lo) / (hi - lo) * width


def panel(rows, key, title, unit, left, top, width, height):
    """One line chart: an SVG fragment."""
    values = [r[key] for series in rows.values() for r in series if r[key] is not None]
    top_value = max(values) * 1.1
    parts = [f'<text x="{left}" y="{top - 12}" font-size="14" font-weight="bold">{title}</text>']
    for i in range(5):
        value = top_value * i / 4
        y = top + height - height * i / 4
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#ddd"/>')
        label = f"{value:,.0f}" if top_value > 100 else f"{value:.1f}"
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{label}</text>')
    for conns in CONNS:
        x = log_x(conns, left, width)
        parts.append(f'<text x="{x:.1f}" y="{top + height + 16}" font-size="11" '
                     f'text-anchor="middle">{conns:,}</text>')
    parts.append(f'<text x="{left + width / 2}" y="{top + height + 34}" font-size="11" '
                 f'text-anchor="middle">connections (log scale); {unit}</text>')
    for name, series in rows.items():
        points = [(log_x(c, left, width), top + height - r[key] / top_value * height)
                  for c, r in zip(CONNS, series) if r[key] is not None]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[name]}" stroke-width="2"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[name]}"/>')
    return "\n".join(parts)


def svg(rows):
    width, height = 880, 360
    body = [
        panel(rows, "rps", "Requests per second (higher is better)", "req/s", 70, 40, 330, 240),
        panel(rows, "srv_us_per_req", "Server CPU per request (lower is better)", "µs", 510, 40, 330, 240),
    ]
    for i, name in enumerate(rows):
        x = 70 + i * 140
        body.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{COLORS[name]}"/>')
        body.append(f'<text x="{x + 18}" y="{height - 12}" font-size="12">{name}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bench", default=os.path.abspath("../shared/bench"))
    parser.add_argument("--duration", type=int, default=3)
    parser.add_argument("--svg", help="where to write the chart")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    loadgen = f"{args.bench}/target/release/loadgen"
    rows = {}
    for name, command in servers(os.getcwd(), args.bench).items():
        rows[name] = [measure(loadgen, command, conns, args.duration) for conns in CONNS]
    print("| server | conns | req/s | p99 µs | server µs/req | errors |")
    print("|---|---|---|---|---|---|")
    for name, series in rows.items():
        for conns, r in zip(CONNS, series):
            print(f"| {name} | {conns:,} | {r['rps']:,.0f} | {r['p99_us']:,.0f} | "
                  f"{r['srv_us_per_req']:.2f} | {r['errors']} |")
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as out:
            out.write(svg(rows))


if __name__ == "__main__":
    main()
