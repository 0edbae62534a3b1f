#!/usr/bin/env python3
"""How the example servers' costs grow with the load: evloop beside its
peers, one short run per point, drawn as an SVG chart with matplotlib.

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
script prints a markdown table and, with --svg X.svg, writes X.json, the
numbers of this run (the mode, the points and every server's figures for
the table and the chart), then the chart X.svg, drawn from them with
matplotlib. --replot X.json runs nothing: it prints the table again from
that file and, with --svg, draws the chart again, so that a chart can be
restyled or redrawn without a benchmark. The same numbers drawn by the
same matplotlib give the same SVG file. matplotlib is needed only for a
chart; when it is missing, the script installs it (`python3 -m pip
install --user matplotlib`, without --user in a venv; if pip fails,
`apt-get update` and `apt-get install -y python3-matplotlib`, through
sudo unless root).

Run from the repository root after a run of tools/bench/run.py, which
builds the examples, tools/loadgen and the peers:

    python3 docs/bench/curves.py --svg docs/bench/echo-curve.svg
    python3 docs/bench/curves.py --mode chat --svg docs/bench/chat-curve.svg
    python3 docs/bench/curves.py --mode files --svg docs/bench/files-curve.svg

and to draw a chart again from the numbers beside it:

    python3 docs/bench/curves.py --replot docs/bench/echo-curve.json --svg docs/bench/echo-curve.svg

--points picks other points (connections, receivers, or file sizes such as
64KiB or 1048576), --downloads other concurrencies for files.
"""

import argparse
import importlib
import json
import math
import os
import resource
import shutil
import site
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


# --- the modes ---------------------------------------------------------------
# A mode's run returns its numbers as one dict, written as JSON beside the
# chart: {"mode", "points", "servers": {name: [a row, or None where a run
# failed, per point]}}; in files, each server's rows are keyed by the
# number of downloads at once ({"1": [...], "8": [...]}), listed in
# "downloads". The table and the chart are made from that dict alone, so
# --replot gives what the run gave.

def fmt(value, spec):
    return "-" if value is None else format(value, spec)


def run_echo(args, work):
    """Measures every echo server at every number of connections."""
    points = args.points or CONNS
    servers = {name: [measure_echo(command, conns, args.duration) for conns in points]
               for name, command in echo_servers(os.getcwd()).items()}
    return {"mode": "echo", "points": points, "servers": servers}


def table_echo(data):
    """Prints echo's numbers as a markdown table."""
    print("| server | conns | req/s | p99 µs | server µs/req | errors |")
    print("|---|---|---|---|---|---|")
    for name, rows in data["servers"].items():
        for conns, r in zip(data["points"], rows):
            print(f"| {name} | {conns:,} | {r['rps']:,.0f} | {r['p99_us']:,.0f} | "
                  f"{r['srv_us_per_req']:.2f} | {r['errors']} |")


def chart_echo(data):
    """Echo's chart: a title and one row of panels, requests/s and server
    CPU per request against connections."""
    servers, points = data["servers"], data["points"]
    xlabel = "connections (log scale)"
    return "echo: 64-byte requests at depth 1, closed loop", [[
        dict(series=servers, xs=points, key="rps", xlabel=xlabel, ylabel="requests/s",
             title="Requests per second (higher is better)"),
        dict(series=servers, xs=points, key="srv_us_per_req", xlabel=xlabel,
             ylabel="server CPU per request (µs)", title="Server CPU per request (lower is better)"),
    ]]


def run_chat(args, work):
    """Measures every chat server at every number of receivers, the servers
    taking turns at each point."""
    points = args.points or RECEIVERS
    commands = chat_servers(os.getcwd())
    servers = {name: [] for name in commands}
    for receivers in points:
        for name, command in commands.items():
            servers[name].append(measure_chat(command, receivers, args.duration))
    return {"mode": "chat", "points": points, "servers": servers}


def table_chat(data):
    """Prints chat's numbers as a markdown table."""
    print("| server | receivers | deliveries/s | p50 µs | p99 µs | server µs/delivery | "
          "delivered | errors | other cpu |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rows in data["servers"].items():
        for receivers, r in zip(data["points"], rows):
            if r is None:
                print(f"| {name} | {receivers:,} | no result |  |  |  |  |  |  |")
                continue
            print(f"| {name} | {receivers:,} | {r['deliveries_per_s']:,.0f} | {r['p50_us']:,.0f} | "
                  f"{r['p99_us']:,.0f} | {fmt(r['srv_us_per_line'], '.2f')} | "
                  f"{r['delivered_ratio']:.4f} | {r['errors']} | {fmt(r['other_cpu'], '.2f')} |")


def chart_chat(data):
    """Chat's chart: a title and one row of panels, p99 latency and server
    CPU per delivered line against receivers."""
    servers, points = data["servers"], data["points"]
    xlabel = "receivers (log scale)"
    return f"chat: one room, {SENDERS} senders, {CHAT_RATE} lines/s in all", [[
        dict(series=servers, xs=points, key="p99_us", log_y=True, xlabel=xlabel,
             ylabel="p99, send to delivery (µs, log scale)", title="p99 latency (lower is better)"),
        dict(series=servers, xs=points, key="srv_us_per_line", xlabel=xlabel,
             ylabel="server CPU per delivery (µs)", title="Server CPU per delivery (lower is better)"),
    ]]


def run_files(args, work):
    """Measures nginx and file_server's two sides at every file size, for
    each number of downloads at once, every server started afresh for every
    point; adds to each row its CPU per download over nginx's."""
    sizes = args.points or SIZES
    names = prepare_files(args.data, sizes)
    root = os.getcwd()
    servers = {name: {str(k): [] for k in args.downloads}
               for name in ("nginx", "evloop", "evloop (http)")}
    for k in args.downloads:
        for size in sizes:
            for name, by_k in servers.items():
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
                by_k[str(k)].append(r)
            ref = servers["nginx"][str(k)][-1]
            for by_k in servers.values():
                r = by_k[str(k)][-1]
                if r is not None and ref is not None and r["srv_us_per_dl"] and ref["srv_us_per_dl"]:
                    r["cpu_vs_nginx"] = r["srv_us_per_dl"] / ref["srv_us_per_dl"]
    return {"mode": "files", "points": sizes, "downloads": args.downloads, "servers": servers}


def table_files(data):
    """Prints the file downloads' numbers as a markdown table."""
    print("| server | file | at once | downloads/s | GB/s | server µs/download | vs nginx | "
          "srv cpu | errors | other cpu |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for k in data["downloads"]:
        for name, by_k in data["servers"].items():
            for size, r in zip(data["points"], by_k[str(k)]):
                if r is None:
                    print(f"| {name} | {size_name(size)} | {k} | no result |  |  |  |  |  |  |")
                    continue
                print(f"| {name} | {size_name(size)} | {k} | {r['downloads_per_s']:,.1f} | "
                      f"{r['gb_s']:.3f} | {fmt(r['srv_us_per_dl'], ',.1f')} | "
                      f"{fmt(r.get('cpu_vs_nginx'), '.2f')} | {fmt(r['srv_cpu'], '.2f')} | "
                      f"{r['errors']} | {fmt(r['other_cpu'], '.2f')} |")


def chart_files(data):
    """The file downloads' chart: a title and one row of panels per number
    of downloads at once, GB/s and server CPU per download over nginx's
    against the file size."""
    grid, xlabel = [], "file size (log scale)"
    for k in data["downloads"]:
        series = {name: by_k[str(k)] for name, by_k in data["servers"].items()}
        at_once = "1 download at a time" if k == 1 else f"{k} downloads at once"
        grid.append([
            dict(series=series, xs=data["points"], key="gb_s", log_y=True, xname=size_name,
                 xlabel=xlabel, ylabel="GB/s (log scale)",
                 title=f"GB/s, {at_once} (higher is better)"),
            dict(series=series, xs=data["points"], key="cpu_vs_nginx", xname=size_name,
                 xlabel=xlabel, ylabel="server CPU per download ÷ nginx's",
                 title=f"CPU ÷ nginx's, {at_once} (lower is better)"),
        ])
    return "files: one connection per download, evloop's file_server beside nginx", grid


MODES = {"echo": (run_echo, table_echo, chart_echo), "chat": (run_chat, table_chat, chart_chat),
         "files": (run_files, table_files, chart_files)}


# --- the numbers, kept and read back -----------------------------------------

def save(data, path):
    """Writes a run's numbers as JSON, for --replot."""
    with open(path, "w", encoding="utf-8") as out:
        json.dump(data, out, indent=2, ensure_ascii=False)
        out.write("\n")


def load(path):
    """Reads the numbers that save() wrote; exits on a file that holds none."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except (OSError, ValueError) as e:
        sys.exit(f"curves.py: {path}: {e}")
    if not isinstance(data, dict) or data.get("mode") not in MODES:
        sys.exit(f"curves.py: {path}: not the numbers of a curves.py run (no known \"mode\")")
    return data


# --- the chart ---------------------------------------------------------------
# Drawn by matplotlib, imported only here, so that a run without --svg does
# not need it.

def find_matplotlib():
    """matplotlib's module, or None when this Python has none."""
    importlib.invalidate_caches()
    try:
        return importlib.import_module("matplotlib")
    except ImportError:
        return None


def install_matplotlib():
    """Installs matplotlib for this Python: with pip, into the user's site
    packages unless this Python has none (in a venv), and if that fails with
    apt-get, through sudo unless root. What each step prints goes to
    stderr."""
    user = ["--user"] if site.ENABLE_USER_SITE else []
    if run_step([sys.executable, "-m", "pip", "install", *user, "matplotlib"]):
        if user:
            site.addsitedir(site.getusersitepackages())
        return
    apt = ["apt-get"] if os.geteuid() == 0 else ["sudo", "apt-get"]
    run_step(apt + ["update"])
    run_step(apt + ["install", "-y", "python3-matplotlib"])


def run_step(command):
    """Runs one installing command, saying so on stderr, its output sent
    there too; True when it succeeded."""
    print(f"curves.py: matplotlib is missing; running {' '.join(command)}", file=sys.stderr)
    try:
        return subprocess.run(command, stdout=sys.stderr,
                              env=dict(os.environ, DEBIAN_FRONTEND="noninteractive")).returncode == 0
    except OSError as e:
        print(f"curves.py: {e}", file=sys.stderr)
        return False


def pyplot():
    """matplotlib's pyplot on the Agg backend (nothing is shown), installing
    matplotlib first when it is missing."""
    matplotlib = find_matplotlib()
    if matplotlib is None:
        install_matplotlib()
        matplotlib = find_matplotlib()
    if matplotlib is None:
        sys.exit("curves.py: the chart needs matplotlib, which could not be installed: run "
                 "`python3 -m pip install --user matplotlib` or `apt-get install python3-matplotlib`")
    matplotlib.use("Agg")
    return importlib.import_module("matplotlib.pyplot")


def plain(value, _=None):
    """A tick label: thousands with separators, smaller values as short as
    they go (0.01, 2.5)."""
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:g}"


def panel(ax, series, xs, key, title, xlabel, ylabel, log_y=False, xname="{:,}".format):
    """Draws one line chart on `ax`, x on a log scale with a tick at each of
    `xs` (labelled by `xname`): `series` maps a server's name to its rows
    (dicts, or None where a run failed), one per x, and each server's line
    joins the values of `key` it has. Returns the values drawn."""
    from matplotlib import ticker
    drawn = []
    for name, rows in series.items():
        points = [(x, r[key]) for x, r in zip(xs, rows)
                  if r is not None and r.get(key) is not None and (r[key] > 0 or not log_y)]
        if points:
            ax.plot(*zip(*points), color=COLORS[name], linewidth=2, marker="o", markersize=4,
                    clip_on=False)
            drawn += [y for _, y in points]
    pad = max((xs[-1] / xs[0]) ** 0.08, 1.2)
    ax.set_xscale("log")
    ax.set_xlim(xs[0] / pad, xs[-1] * pad)
    ax.set_xticks(xs)
    ax.set_xticklabels([xname(x) for x in xs])
    ax.xaxis.set_minor_locator(ticker.NullLocator())
    if log_y:
        ax.set_yscale("log")
        ax.yaxis.set_minor_formatter(ticker.NullFormatter())
    ax.yaxis.set_major_formatter(ticker.FuncFormatter(plain))
    ax.grid(True, color="#ddd", linewidth=0.8)
    ax.set_axisbelow(True)
    ax.set_title(title, fontsize=11, fontweight="bold")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    return drawn


def draw(path, title, grid, names):
    """Writes the chart to `path` as SVG: under `title`, one row of panels
    per list in `grid` (each panel the keyword arguments of panel() but
    `ax`), the panels of a column sharing their y axis (a linear one from
    0, a log one over the whole decades its values span), and a legend of
    the servers `names` below. The same numbers drawn again by the same
    matplotlib give the same file."""
    plt = pyplot()
    from matplotlib.lines import Line2D
    # Text stays text (searchable, small), in the reader's sans-serif font.
    with plt.rc_context({"svg.hashsalt": "evloop-curves", "svg.fonttype": "none",
                         "font.family": "sans-serif"}):
        cols = max(len(specs) for specs in grid)
        fig, axes = plt.subplots(len(grid), cols, figsize=(5 * cols, 0.6 + 3.6 * len(grid)),
                                 sharey="col", squeeze=False, layout="constrained")
        drawn = [[] for _ in range(cols)]
        for row, specs in zip(axes, grid):
            for col, (ax, spec) in enumerate(zip(row, specs)):
                drawn[col] += panel(ax, **spec)
        for ax, values in zip(axes[0], drawn):
            if ax.get_yscale() == "linear":
                ax.set_ylim(bottom=0)
            elif values:
                low = math.floor(math.log10(min(values)))
                high = max(math.ceil(math.log10(max(values))), low + 1)
                ax.set_ylim(10.0 ** low, 10.0 ** high)
        fig.suptitle(title, fontsize=13)
        fig.legend(handles=[Line2D([], [], color=COLORS[name], linewidth=2, marker="o",
                                   markersize=4, label=name) for name in names],
                   loc="upper center", bbox_to_anchor=(0.5, 0), ncol=len(names), frameon=False)
        fig.savefig(path, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)


def measure(parser, args):
    """Checks the run's arguments and runs the mode's points; returns their
    numbers."""
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
        return MODES[args.mode][0](args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main():
    summary, _, details = __doc__.partition("\n\n")
    parser = argparse.ArgumentParser(description=summary.replace("\n", " "), epilog=details,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mode", choices=list(MODES), default="echo")
    parser.add_argument("--duration", type=float, default=3, help="seconds per run (default 3)")
    parser.add_argument("--svg", help="where to write the chart (and, unless --replot, its numbers "
                                      "beside it: X.svg, X.json)")
    parser.add_argument("--replot", metavar="JSON",
                        help="run nothing: print the table and draw the chart from the numbers "
                             "in this file (its mode and points, not --mode and --points)")
    parser.add_argument("--data", default=os.environ.get("BENCH_DATA", os.path.join(bench.WORK, "data")),
                        help="files: the directory of the test files")
    parser.add_argument("--points", help="comma-separated connections, receivers or file sizes")
    parser.add_argument("--downloads", default=",".join(map(str, DOWNLOADS)),
                        help="files: comma-separated concurrent downloads (default 1,8)")
    args = parser.parse_args()
    if args.replot:
        data = load(args.replot)
    else:
        data = measure(parser, args)
    _, table, chart = MODES[data["mode"]]
    table(data)
    if args.svg:
        if not args.replot:
            save(data, os.path.splitext(args.svg)[0] + ".json")
        draw(args.svg, *chart(data), list(data["servers"]))


if __name__ == "__main__":
    main()
