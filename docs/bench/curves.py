#!/usr/bin/env python3
"""How the example servers' costs grow with the load: evloop beside its
peers, one short run per point, drawn as an SVG chart.

--mode echo (the default): 64-byte requests at depth 1, closed loop, from
    10 to 10,000 connections (1 s of warm-up, then --duration s), evloop's
    echo beside tokio (current_thread) and the C epoll server. Chart:
    requests/s and server CPU per request against connections (log scale).

--mode chat: one room with 10 senders and 10, 100 or 1,000 receivers,
    evloop's chat beside tokio_chat (current_thread). The senders send 200
    lines/s in all at every point, the rate of run.py's 1000-receiver
    scenario, so the 1,000 point is that scenario (about 202,000 deliveries
    per second) and the smaller rooms get the same lines (3,800 and 21,800
    deliveries/s): the points differ only in how many members each line
    goes to. Chart: p99 latency from send to delivery (log scale) and the
    server's CPU time per delivered line, against receivers (log scale).
    That CPU time is loadgen's server_us_per_line (read from the
    kernel's per-thread schedstat, in nanoseconds, over the sending
    window) divided by the deliveries each line makes.

--mode files: downloads of 1 KiB, 64 KiB, 1 MiB, 16 MiB and 1 GiB files,
    1 at a time and 8 at once (each connection downloads the file again and
    again, one connection per download, for --duration s), from
    file_server's plain protocol (`evloop`, `--proto plain`) and its HTTP
    side (`evloop (http)`), and from nginx (sendfile on, one process,
    configured from tools/bench/peers/nginx.conf.in as run.py does). Every server
    is restarted for every point. The 1 GiB file is run.py's big.bin in
    --data (default $BENCH_DATA, else target/bench/data; written if
    missing); the smaller ones are written there too (curve-BYTES.bin).
    All are read twice with cat first, so that they are in the page cache.
    downloads/s is body bytes per second divided by the file size, so a
    download the window cut short counts for its share (at 1 GiB only a few
    finish). Chart, one row per concurrency: GB/s against file size (both
    log scales: small files are bound by requests, large ones by bytes),
    and the server's CPU time per download over nginx's at the same point
    (lower is better), which reads the same at 1 KiB and at 1 GiB and
    stays fair where the client, not the server, is the bottleneck.

Each server is pinned to CPU 0 and tools/loadgen to CPU 1; all traffic
is on loopback; every run lasts --duration seconds (chat: 1 s of joining
before, at most 2 s of draining after). Servers are stopped by PID. The
script prints a markdown table and, with --svg, writes the chart, drawn
here from the numbers of this run, with no plotting library.

Run from the repository root after a run of tools/bench/run.py, which
builds the examples, tools/loadgen and the peers:

    python3 docs/bench/curves.py --svg docs/bench/echo-curve.svg
    python3 docs/bench/curves.py --mode chat --svg docs/bench/chat-curve.svg
    python3 docs/bench/curves.py --mode files --svg docs/bench/files-curve.svg

--points picks other points (connections, receivers, or file sizes such as
64KiB or 1048576), --downloads other concurrencies for files.
"""

import argparse
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "tools", "bench"))
import run as bench  # noqa: E402  (the harness: its servers, nginx and loadgen)

CONNS = [10, 100, 1000, 10000]
RECEIVERS = [10, 100, 1000]
SENDERS = 10
CHAT_RATE = 200     # lines/s in all, at every point
SIZES = [1 << 10, 64 << 10, 1 << 20, 16 << 20, 1 << 30]
DOWNLOADS = [1, 8]
BIG = "big.bin"     # run.py's 1 GiB file
COLORS = {"evloop": "#d9480f", "evloop (http)": "#f59f00", "tokio_ct": "#1971c2",
          "c_epoll": "#2f9e44", "nginx": "#2f9e44"}


def echo_servers(root):
    return {
        "evloop": [f"{root}/target/release/examples/echo", "--tcp", "127.0.0.1:0"],
        "tokio_ct": [f"{bench.PEERS}/target/release/tokio_echo", "--flavor", "current_thread",
                     "--nodelay", "127.0.0.1:0"],
        "c_epoll": [f"{bench.WORK}/c_epoll_echo", "127.0.0.1:0"],
    }


def chat_servers(root):
    return {
        "evloop": [f"{root}/target/release/examples/chat", "--tcp", "127.0.0.1:0"],
        "tokio_ct": [f"{bench.PEERS}/target/release/tokio_chat", "--flavor", "current_thread",
                     "--nodelay", "127.0.0.1:0"],
    }


def file_server(root, data):
    return [f"{root}/target/release/examples/file_server", "--tcp", "127.0.0.1:0",
            "--http", "127.0.0.1:0", "--root", data]


# --- processes ---------------------------------------------------------------
# Servers are started, pinned and stopped by the harness's own code
# (tools/bench/run.py), so a curve point is measured exactly as a row there.

def start(command, kinds=("tcp",)):
    """Starts a server on CPU 0; returns the harness's Server once it has
    announced a socket of each of `kinds` (`listening KIND ADDR`)."""
    server = bench.Server(os.path.basename(command[0]), command, list(kinds))
    failure = server.start()
    if failure:
        sys.exit(f"curves.py: {command[0]}: {failure}")
    return server


def start_nginx(data, work):
    """Starts nginx on CPU 0 as run.py does (one process, in the foreground,
    its prefix and configuration in the work directory)."""
    if bench.nginx_path() is None:
        sys.exit("curves.py: the files mode needs nginx (apt-get install nginx)")
    server = bench.Nginx("nginx", data, work)
    failure = server.start()
    if failure:
        sys.exit(f"curves.py: {failure}")
    return server


def run_loadgen(args, timeout):
    """Runs loadgen on CPU 1; returns (exit code, its JSON line or None,
    its stderr). The exit code is None when it ran out of time."""
    return bench.run_loadgen(args, timeout)


# --- measurements ------------------------------------------------------------

def measure_echo(command, conns, duration):
    server = start(command)
    try:
        rc, result, err = run_loadgen(
            ["echo", "--tcp", server.addrs["tcp"], "--conns", str(conns), "--size", "64",
                      "--depth", "1", "--duration", str(duration), "--warmup", "1",
                      "--pid", str(server.proc.pid)], duration + 120)
    finally:
        server.stop()
    if rc != 0 or result is None:
        sys.exit(f"curves.py: loadgen failed at {conns} connections: {err}")
    rps = result["rps"]
    return {
        "rps": rps,
        "p99_us": result["p99_us"],
        "errors": result["errors"],
        "srv_us_per_req": result["server_cpu"] / rps * 1e6 if rps else None,
    }


def measure_chat(command, receivers, duration):
    """One chat run; loadgen reads the server's CPU time over its sending
    window (from the kernel's per-thread schedstat, in nanoseconds)."""
    members = receivers + SENDERS
    server = start(command)
    try:
        rc, result, err = run_loadgen(
            ["chat", "--tcp", server.addrs["tcp"], "--receivers", str(receivers),
             "--senders", str(SENDERS), "--rate", str(CHAT_RATE), "--duration", str(duration),
             "--pid", str(server.proc.pid)], duration + 120)
    finally:
        server.stop()
    if result is None:
        print(f"curves.py: loadgen chat gave no result at {receivers} receivers "
              f"(exit {rc}): {err}", file=sys.stderr)
        return None
    if rc != 0:
        print(f"curves.py: loadgen chat exit {rc} at {receivers} receivers: {err}", file=sys.stderr)
    per_line = result.get("server_us_per_line")
    return {
        "deliveries_per_s": result["deliveries_per_s"],
        "p50_us": result["p50_us"],
        "p99_us": result["p99_us"],
        "delivered_ratio": result["delivered"],
        "errors": result["errors"],
        "other_cpu": result.get("other_cpu"),
        "srv_us_per_line": per_line / (members - 1) if per_line else None,
        "ok": rc == 0,
    }


def measure_download(pid, addr, proto, name, size, conns, duration):
    rc, result, err = run_loadgen(
        ["download", "--tcp", addr, "--name", name, "--conns", str(conns),
                  "--expect-bytes", str(size), "--duration", str(duration), "--proto", proto,
                  "--pid", str(pid)], duration + 60)
    what = f"{proto} download of {size_name(size)} x {conns}"
    if result is None:
        print(f"curves.py: loadgen gave no result for a {what} (exit {rc}): {err}",
              file=sys.stderr)
        return None
    if rc != 0:
        print(f"curves.py: loadgen exit {rc} for a {what}: {err}", file=sys.stderr)
    per_s = result["bytes"] / result["seconds"] / size
    return {
        "downloads_per_s": per_s,
        "gb_s": result["bytes"] / result["seconds"] / 1e9,
        "finished": result["downloads"],
        "srv_cpu": result.get("server_cpu"),
        "srv_us_per_dl": result["server_cpu"] / per_s * 1e6 if per_s else None,
        "errors": result["errors"],
        "other_cpu": result.get("other_cpu"),
        "ok": rc == 0,
    }


def size_name(size):
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift} {unit}"
    return f"{size} B"


def parse_size(text):
    text = text.strip().replace(" ", "")
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10), ("B", 0)):
        if text.endswith(unit):
            return int(text[:-len(unit)]) << shift
    return int(text)


def prepare_files(data, sizes):
    """Makes sure `data` holds a file of each size, readable by all, and
    reads each twice so that it is in the page cache; returns {size: name}."""
    os.makedirs(data, exist_ok=True)
    names = {}
    for size in sizes:
        name = BIG if size == 1 << 30 else f"curve-{size}.bin"
        path = os.path.join(data, name)
        if not os.path.isfile(path) or os.path.getsize(path) != size:
            print(f"curves.py: writing {path} ({size_name(size)})", file=sys.stderr)
            with open(path, "wb") as f:
                left = size
                while left:
                    chunk = os.urandom(min(left, 1 << 20))
                    f.write(chunk)
                    left -= len(chunk)
        os.chmod(path, os.stat(path).st_mode | 0o444)
        names[size] = name
    for _ in range(2):
        for name in names.values():
            subprocess.run(["cat", os.path.join(data, name)], stdout=subprocess.DEVNULL, check=True)
    return names


# --- the chart ---------------------------------------------------------------

def panel(series, xs, key, title, caption, box, log_y=False, xlabel="{:,}".format, scale=None):
    """One line chart, x on a log scale: an SVG fragment. `series` maps a
    server's name to its rows (dicts, or None where a run failed), one per x;
    the y axis spans the values of `scale` (a list of such maps; default:
    this one), so that panels of one metric can share it."""
    left, top, width, height = box
    lo_x, hi_x = math.log10(xs[0]), math.log10(xs[-1])

    def x_at(x):
        if hi_x == lo_x:
            return left + width / 2
        return left + (math.log10(x) - lo_x) / (hi_x - lo_x) * width

    values = [r[key] for group in (scale or [series]) for rows in group.values() for r in rows
              if r is not None and r.get(key) is not None and (r[key] > 0 or not log_y)]
    parts = [f'<text x="{left}" y="{top - 12}" font-size="14" font-weight="bold">{title}</text>']
    if not values:
        return "\n".join(parts)
    if log_y:
        lo_y = math.floor(math.log10(min(values)))
        hi_y = max(math.ceil(math.log10(max(values))), lo_y + 1)
        ticks = [10.0 ** k for k in range(lo_y, hi_y + 1)]

        def y_at(v):
            return top + height - (math.log10(v) - lo_y) / (hi_y - lo_y) * height

        def label(v):
            return f"{v:,.0f}" if v >= 1 else f"{v:g}"
    else:
        top_value = max(values) * 1.1
        ticks = [top_value * i / 4 for i in range(5)]

        def y_at(v):
            return top + height - v / top_value * height

        def label(v):
            return f"{v:,.0f}" if top_value > 100 else f"{v:.1f}"
    for value in ticks:
        y = y_at(value)
        parts.append(f'<line x1="{left}" y1="{y:.1f}" x2="{left + width}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6}" y="{y + 4:.1f}" font-size="11" text-anchor="end">{label(value)}</text>')
    for x in xs:
        parts.append(f'<text x="{x_at(x):.1f}" y="{top + height + 16}" font-size="11" '
                     f'text-anchor="middle">{xlabel(x)}</text>')
    parts.append(f'<text x="{left + width / 2}" y="{top + height + 34}" font-size="11" '
                 f'text-anchor="middle">{caption}</text>')
    for name, rows in series.items():
        points = [(x_at(x), y_at(r[key])) for x, r in zip(xs, rows)
                  if r is not None and r.get(key) is not None and (r[key] > 0 or not log_y)]
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{COLORS[name]}" stroke-width="2"/>')
        for x, y in points:
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{COLORS[name]}"/>')
    return "\n".join(parts)


def svg(grid, names):
    """A chart of panels, two to a row: `grid` is a list of rows, each a list
    of keyword arguments for panel() (all but box), then a legend of `names`."""
    width, height = 880, 40 + 320 * len(grid)
    body = []
    for row, specs in enumerate(grid):
        for col, spec in enumerate(specs):
            body.append(panel(box=(70 + 440 * col, 40 + 320 * row, 330, 240), **spec))
    for i, name in enumerate(names):
        x = 70 + i * 140
        body.append(f'<rect x="{x}" y="{height - 22}" width="12" height="12" fill="{COLORS[name]}"/>')
        body.append(f'<text x="{x + 18}" y="{height - 12}" font-size="12">{name}</text>')
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
            + "\n".join(body) + "\n</svg>\n")


# --- the modes ---------------------------------------------------------------

def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def echo_mode(args, work):
    conns_list = args.points or CONNS
    rows = {}
    for name, command in echo_servers(os.getcwd()).items():
        rows[name] = [measure_echo(command, conns, args.duration)
                      for conns in conns_list]
    print("| server | conns | req/s | p99 µs | server µs/req | errors |")
    print("|---|---|---|---|---|---|")
    for name, series in rows.items():
        for conns, r in zip(conns_list, series):
            print(f"| {name} | {conns:,} | {r['rps']:,.0f} | {r['p99_us']:,.0f} | "
                  f"{r['srv_us_per_req']:.2f} | {r['errors']} |")
    unit = "connections (log scale); "
    return [[dict(series=rows, xs=conns_list, key="rps", title="Requests per second (higher is better)",
                  caption=unit + "req/s"),
             dict(series=rows, xs=conns_list, key="srv_us_per_req",
                  title="Server CPU per request (lower is better)", caption=unit + "µs")]], list(rows)


def chat_mode(args, work):
    receivers_list = args.points or RECEIVERS
    servers = chat_servers(os.getcwd())
    rows = {name: [] for name in servers}
    for receivers in receivers_list:
        for name, command in servers.items():
            rows[name].append(measure_chat(command, receivers, args.duration))
    print("| server | receivers | deliveries/s | p50 µs | p99 µs | server µs/delivery | "
          "delivered | errors | other cpu |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, series in rows.items():
        for receivers, r in zip(receivers_list, series):
            if r is None:
                print(f"| {name} | {receivers:,} | no result |  |  |  |  |  |  |")
                continue
            print(f"| {name} | {receivers:,} | {r['deliveries_per_s']:,.0f} | {r['p50_us']:,.0f} | "
                  f"{r['p99_us']:,.0f} | {fmt(r['srv_us_per_line'], '.2f')} | "
                  f"{r['delivered_ratio']:.4f} | {r['errors']} | {fmt(r['other_cpu'], '.2f')} |")
    unit = f"receivers (log scale), {SENDERS} senders, {CHAT_RATE} lines/s; "
    return [[dict(series=rows, xs=receivers_list, key="p99_us", log_y=True,
                  title="p99 latency (lower is better)", caption=unit + "µs, log scale"),
             dict(series=rows, xs=receivers_list, key="srv_us_per_line",
                  title="Server CPU per delivery (lower is better)", caption=unit + "µs")]], list(rows)


def files_mode(args, work):
    sizes = args.points or SIZES
    names = prepare_files(args.data, sizes)
    root = os.getcwd()
    servers = ["nginx", "evloop", "evloop (http)"]
    rows = {(name, k): [] for name in servers for k in args.downloads}
    for k in args.downloads:
        for size in sizes:
            for name in servers:
                if name == "nginx":
                    server = start_nginx(args.data, work)
                else:
                    server = start(file_server(root, args.data), kinds=("tcp", "http"))
                proto, addr = (("plain", server.addrs["tcp"]) if name == "evloop"
                               else ("http", server.addrs["http"]))
                try:
                    r = measure_download(server.proc.pid, addr, proto, names[size], size, k,
                                         args.duration)
                finally:
                    server.stop()
                rows[(name, k)].append(r)
            ref = rows[("nginx", k)][-1]
            for name in servers:
                r = rows[(name, k)][-1]
                if r is not None and ref is not None and r["srv_us_per_dl"] and ref["srv_us_per_dl"]:
                    r["cpu_vs_nginx"] = r["srv_us_per_dl"] / ref["srv_us_per_dl"]
    print("| server | file | at once | downloads/s | GB/s | server µs/download | vs nginx | "
          "srv cpu | errors | other cpu |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in args.downloads:
        for name in servers:
            for size, r in zip(sizes, rows[(name, k)]):
                if r is None:
                    print(f"| {name} | {size_name(size)} | {k} | no result |  |  |  |  |  |  |")
                    continue
                print(f"| {name} | {size_name(size)} | {k} | {r['downloads_per_s']:,.1f} | "
                      f"{r['gb_s']:.3f} | {fmt(r['srv_us_per_dl'], ',.1f')} | "
                      f"{fmt(r.get('cpu_vs_nginx'), '.2f')} | {fmt(r['srv_cpu'], '.2f')} | "
                      f"{r['errors']} | {fmt(r['other_cpu'], '.2f')} |")
    grid, every = [], [{name: rows[(name, k)] for name in servers} for k in args.downloads]
    for k in args.downloads:
        series = {name: rows[(name, k)] for name in servers}
        at_once = "1 download at a time" if k == 1 else f"{k} downloads at once"
        grid.append([
            dict(series=series, xs=sizes, key="gb_s", log_y=True, xlabel=size_name, scale=every,
                 title=f"GB/s, {at_once}", caption="file size (log scale); GB/s, log scale"),
            dict(series=series, xs=sizes, key="cpu_vs_nginx", xlabel=size_name, scale=every,
                 title="Server CPU per download ÷ nginx's",
                 caption="file size (log scale); lower is better, nginx = 1"),
        ])
    return grid, servers


def main():
    summary, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(description=summary.replace("\n", " "), epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=["echo", "chat", "files"], default="echo")
    parser.add_argument("--duration", type=float, default=3, help="seconds per run (default 3)")
    parser.add_argument("--svg", help="where to write the chart")
    parser.add_argument("--data", default=os.environ.get("BENCH_DATA", os.path.join(bench.WORK, "data")),
                        help="files: the directory of the test files")
    parser.add_argument("--points", help="comma-separated connections, receivers or file sizes")
    parser.add_argument("--downloads", default=",".join(map(str, DOWNLOADS)),
                        help="files: comma-separated concurrent downloads (default 1,8)")
    args = parser.parse_args()
    if args.duration == int(args.duration):
        args.duration = int(args.duration)
    try:
        if args.points:
            parse = parse_size if args.mode == "files" else int
            args.points = sorted({parse(p) for p in args.points.split(",")})
        args.downloads = [int(k) for k in args.downloads.split(",")]
    except ValueError as e:
        parser.error(str(e))
    if args.points and min(args.points) <= 0 or min(args.downloads) <= 0:
        parser.error("points and downloads must be positive")
    args.data = os.path.abspath(args.data)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(65536, hard), hard))
    if not os.access(bench.LOADGEN, os.X_OK):
        sys.exit(f"curves.py: no {bench.LOADGEN}; build it and the peers first "
                 "(tools/bench/run.py does, or see tools/bench/README.md)")
    work = tempfile.mkdtemp(prefix="evloop-curves.")
    try:
        mode = {"echo": echo_mode, "chat": chat_mode, "files": files_mode}[args.mode]
        grid, names = mode(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.svg:
        with open(args.svg, "w", encoding="utf-8") as out:
            out.write(svg(grid, names))


if __name__ == "__main__":
    main()
