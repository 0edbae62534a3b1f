#!/usr/bin/env python3
"""Side-by-side benchmarks: evloop's example servers beside the servers a
user would pick instead, measured in one run, on one machine, the same way.

    tools/bench/run.py echo   [--duration SECS]   # ~2.5 min
    tools/bench/run.py idle   [--conns N]         # ~30 s
    tools/bench/run.py files  [--duration SECS]   # ~1 min (+ a 1 GiB file once)
    tools/bench/run.py chat   [--duration SECS]   # ~40 s
    tools/bench/run.py shards [--duration SECS]   # ~1.5 min: two cores for the server, nothing pinned
    tools/bench/run.py tls    [--duration SECS]   # ~1.5 min (+ a 1 GiB file once): files, echo, idle over TLS
    tools/bench/run.py proxy  [--requests N]      # ~1 min: TCP proxy in front of redis-server, beside HAProxy
    tools/bench/run.py redis_chat [--duration SECS]  # ~30 s: one chat room over two servers and Redis
    tools/bench/run.py overhead [--rounds N] [--base DIR]  # ~6 min: what the counters, watchdog and recorder cost

Common flags: --rows a,b (only these rows), --examples DIR (the evloop
build to measure, default target/release/examples), --server NAME=CMD
(one more row: CMD gets the same address flags as evloop's example),
--quick (short windows and small loads: a check that every row runs, not
a measurement), --no-build, --no-install.

What one run does:

1. Builds what it measures: the workspace (`cargo build --release --bins
   --examples`: the examples and tools/loadgen), the tokio peers
   (tools/bench/peers, a workspace of its own), the C epoll server (gcc
   -O2). It installs gcc, nginx and openssl with apt-get when they are
   missing (files and tls need nginx; tls needs the openssl CLI for its
   self-signed certificate; proxy needs redis-server, redis-tools and
   haproxy; redis_chat needs redis-server); `perf`, when present, adds
   the `sys/req` column.
2. For each row: waits (up to 60 s) until the machine is quiet, starts
   the server pinned to CPU 0 (`taskset -c 0`) on a 127.0.0.1:0 port,
   reads its port from its announce line (`listening tcp ADDR`; `tls` or
   `https` for the TLS listeners), runs tools/loadgen pinned to CPU 1,
   and stops the server by its PID (SIGTERM; SIGKILL after 5 s). Every
   server starts afresh for every table. (proxy: the proxy under test on
   CPU 0, redis-server and redis-benchmark on CPU 1; redis_chat: both chat
   servers on CPU 0, redis-server and loadgen on CPU 1.)
3. Prints one markdown table per scenario, with a ratio column over the
   reference row, and appends each loadgen JSON line (with the row's name,
   the command and the quiet wait added) to
   target/bench/results/SCENARIO-DATE.jsonl.

Every load is bounded in time and goes to loopback only. Columns and
rows are described in tools/bench/README.md.
"""

import argparse
import csv
import datetime
import json
import math
import os
import pwd
import resource
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
PEERS = os.path.join(ROOT, "tools", "bench", "peers")
WORK = os.path.join(ROOT, "target", "bench")
LOADGEN = os.path.join(ROOT, "target", "release", "loadgen")
SERVER_CPU = "0"
CLIENT_CPU = "1"
BIG = 1 << 30


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- building


def have(cmd):
    return shutil.which(cmd) is not None


def apt_install(packages):
    """Installs Debian packages, as .ci/run does; False when that fails."""
    if os.geteuid() != 0:
        log(f"run.py: need {' '.join(packages)}; install them (not root, so not trying)")
        return False
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    # Installing nginx would start it as a service on port 80: a process
    # this script did not start. Debian's policy-rc.d, while it exits 101,
    # keeps packages from starting services.
    policy = "/usr/sbin/policy-rc.d"
    ours = not os.path.exists(policy)
    if ours:
        with open(policy, "w", encoding="ascii") as f:
            f.write("#!/bin/sh\nexit 101\n")
        os.chmod(policy, 0o755)
    try:
        for args in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", *packages]):
            if subprocess.run(args, env=env).returncode != 0:
                return False
        return True
    finally:
        if ours:
            os.unlink(policy)


def build(args, scenario):
    need = []
    if not have("gcc"):
        need.append("gcc")
    if scenario in ("files", "shards", "tls") and not have("nginx") and not os.path.exists("/usr/sbin/nginx"):
        need.append("nginx")
    if scenario == "tls" and not have("openssl"):
        need.append("openssl")
    if scenario == "shards" and not have("wrk"):
        need.append("wrk")
    if scenario == "proxy":
        need += [pkg for cmd, pkg in (("redis-server", "redis-server"), ("redis-benchmark", "redis-tools"))
                 if not have(cmd)]
        if haproxy_path() is None:
            need.append("haproxy")
    if scenario == "redis_chat" and not have("redis-server"):
        need.append("redis-server")
    if need and not args.no_install:
        apt_install(need)
    if args.no_build:
        return
    run_checked(["cargo", "build", "--release", "--bins", "--examples"], cwd=ROOT)
    run_checked(["cargo", "build", "--release", "--manifest-path", os.path.join(PEERS, "Cargo.toml")],
                cwd=ROOT)
    os.makedirs(WORK, exist_ok=True)
    run_checked(["gcc", "-O2", "-Wall", "-Wextra", "-o", os.path.join(WORK, "c_epoll_echo"),
                 os.path.join(PEERS, "c_epoll_echo.c")], cwd=ROOT)


def run_checked(argv, cwd):
    log("run.py: " + " ".join(argv))
    if subprocess.run(argv, cwd=cwd).returncode != 0:
        sys.exit(f"run.py: failed: {' '.join(argv)}")


def nginx_path():
    return shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)


def haproxy_path():
    return shutil.which("haproxy") or ("/usr/sbin/haproxy" if os.path.exists("/usr/sbin/haproxy") else None)


def make_data(data, name, big_size):
    """The files scenario's data: NAME (random bytes, written once) and
    small.bin (1 KiB)."""
    os.makedirs(data, exist_ok=True)
    big = os.path.join(data, name)
    if not os.path.exists(big) or os.path.getsize(big) != big_size:
        log(f"run.py: writing {big} ({big_size} bytes from /dev/urandom)")
        with open("/dev/urandom", "rb") as src, open(big + ".part", "wb") as dst:
            left = big_size
            while left:
                chunk = src.read(min(left, 1 << 20))
                dst.write(chunk)
                left -= len(chunk)
        os.rename(big + ".part", big)
    small = os.path.join(data, "small.bin")
    if not os.path.exists(small):
        with open(small, "wb") as f:
            f.write(bytes(i % 251 for i in range(1024)))
    # Read the big file once so that every row finds it in the page cache.
    with open(big, "rb") as f:
        while f.read(1 << 22):
            pass
    return big


def make_cert(work):
    """The tls scenario's certificate, made afresh for each run under
    WORK/tls: self-signed ECDSA P-256 for localhost and 127.0.0.1, not a CA
    (rustls refuses a CA certificate as a server's), with its PKCS#8 key.
    (cert path, key path)."""
    if not have("openssl"):
        sys.exit("run.py: tls needs the openssl CLI (apt-get install openssl)")
    folder = os.path.join(work, "tls")
    os.makedirs(folder, exist_ok=True)
    cert, key = os.path.join(folder, "cert.pem"), os.path.join(folder, "key.pem")
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-days", "3650", "-keyout", key, "-out", cert, "-subj", "/CN=localhost",
            "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-addext", "basicConstraints=critical,CA:FALSE"]
    done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"run.py: failed: {' '.join(argv)}: {done.stderr.strip()[-300:]}")
    return cert, key


# ----------------------------------------------------------- the machine


def cpu_ticks():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat", encoding="ascii") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    return total - idle, total


def busy_cores(seconds):
    """How many cores' worth of work the machine did over `seconds`."""
    b0, t0 = cpu_ticks()
    time.sleep(seconds)
    b1, t1 = cpu_ticks()
    ncpu = os.cpu_count() or 1
    return (b1 - b0) / max(t1 - t0, 1) * ncpu


def wait_quiet(limit=60.0, threshold=0.2):
    """Waits until the machine is quiet (under `threshold` of one core busy
    over a second), at most `limit` seconds; returns how long it waited, or
    None when it never was quiet."""
    start = time.monotonic()
    while True:
        if busy_cores(1.0) < threshold:
            return round(time.monotonic() - start - 1.0, 1)
        if time.monotonic() - start > limit:
            return None


# ------------------------------------------------------------- servers


class Server:
    """One server process, pinned to the server CPU, and its announced
    addresses."""

    def __init__(self, name, argv, kinds, pids_of=None, pin=True):
        self.name = name
        self.argv = ["taskset", "-c", SERVER_CPU, *argv] if pin else list(argv)
        self.kinds = kinds
        self.addrs = {}
        self.proc = None
        self.err = tempfile.TemporaryFile()
        self.pids_of = pids_of

    def start(self, timeout=15.0):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.PIPE, stderr=self.err,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        buf = b""
        while set(self.kinds) - set(self.addrs):
            left = deadline - time.monotonic()
            if left <= 0 or self.proc.poll() is not None:
                break
            ready, _, _ = select.select([self.proc.stdout], [], [], left)
            if not ready:
                continue
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                break
            buf += chunk
            while b"\n" in buf:
                line, buf = buf.split(b"\n", 1)
                words = line.decode(errors="replace").split()
                if len(words) == 3 and words[0] == "listening":
                    self.addrs[words[1]] = words[2]
        missing = set(self.kinds) - set(self.addrs)
        if missing:
            status = self.proc.poll()
            self.stop()
            return f"no '{sorted(missing)[0]}' announce (exit {status}): {self.first_err_line()}"
        return None

    def first_err_line(self):
        self.err.seek(0)
        lines = self.err.read().decode(errors="replace").strip().splitlines()
        return lines[0] if lines else ""

    @property
    def pids(self):
        return self.pids_of() if self.pids_of else [self.proc.pid]

    def stop(self):
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Nginx(Server):
    """nginx from tools/bench/peers/nginx.conf.in: one process
    (`master_process off`), in the foreground, on a free port. nginx cannot
    listen on port 0, so a port is picked by binding 127.0.0.1:0 and
    letting it go; it announces nothing, so it is ready when it accepts.
    With `tls` (cert, key), it serves HTTPS (TLS 1.3 only) and its address
    is of the kind `https`, else `http`."""

    def __init__(self, name, data, work, workers=1, pin=True, tls=None):
        self.prefix = os.path.join(work, "nginx")
        os.makedirs(os.path.join(self.prefix, "logs"), exist_ok=True)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        with open(os.path.join(PEERS, "nginx.conf.in"), encoding="utf-8") as f:
            conf = f.read()
        ssl = ""
        if tls:
            # On one line: the placeholder's name in the file's header
            # comment is replaced too. nginx 1.22's default ssl_protocols
            # leave TLS 1.3 out.
            ssl = f"ssl_certificate {tls[0]}; ssl_certificate_key {tls[1]}; ssl_protocols TLSv1.3;"
        self.kind = "https" if tls else "http"
        for key, value in {"@ROOT@": data, "@LISTEN@": f"127.0.0.1:{port}",
                           "@LISTEN_OPTS@": " ssl" if tls else "", "@SSL@": ssl,
                           "@WORKERS@": str(workers), "@MASTER@": "off" if workers == 1 else "on",
                           "@PREFIX@": self.prefix, "@USER@": pwd.getpwuid(os.geteuid()).pw_name,
                           "@ERROR_LOG@": os.path.join(self.prefix, "logs", "error.log")}.items():
            conf = conf.replace(key, value)
        conf_path = os.path.join(self.prefix, "nginx.conf")
        with open(conf_path, "w", encoding="utf-8") as f:
            f.write(conf)
        super().__init__(name, [nginx_path(), "-p", self.prefix, "-c", conf_path], [self.kind],
                         pids_of=lambda: [self.proc.pid, *children(self.proc.pid)], pin=pin)
        self.port = port

    def start(self, timeout=15.0):
        self.proc = subprocess.Popen(self.argv, stdout=subprocess.DEVNULL, stderr=self.err,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                self.addrs[self.kind] = f"127.0.0.1:{self.port}"
                return None
            except OSError:
                time.sleep(0.05)
        status = self.proc.poll()
        self.stop()
        return f"nginx did not start (exit {status}): {self.first_err_line()}"


class Pair(Server):
    """Two processes of one server on one port with SO_REUSEPORT: the first
    on port 0, the second on the port the first announced."""

    def __init__(self, name, argv_for):
        super().__init__(name, argv_for("127.0.0.1:0"), ["tcp"], pin=False)
        self.argv_for = argv_for
        self.second = None

    def start(self, timeout=15.0):
        failure = super().start(timeout)
        if failure:
            return failure
        self.second = Server(self.name, self.argv_for(self.addrs["tcp"]), ["tcp"], pin=False)
        failure = self.second.start(timeout)
        if failure:
            super().stop()
        return failure

    @property
    def pids(self):
        return [self.proc.pid, self.second.proc.pid]

    def stop(self):
        if self.second is not None:
            self.second.stop()
        super().stop()


def free_port():
    """A port of 127.0.0.1 that was free a moment ago (bound to port 0 and
    let go), for servers that cannot listen on port 0 and tell the port."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Polled(Server):
    """A server that announces nothing, on a port the runner picked: ready
    when probe() succeeds (polled every 50 ms). Its stdout and stderr go to
    one file, whose last line a failure quotes. `cpu`: the CPU it is pinned
    to (None: not pinned)."""

    def __init__(self, name, argv, port, cpu=SERVER_CPU):
        super().__init__(name, ["taskset", "-c", cpu, *argv] if cpu is not None else argv, ["tcp"], pin=False)
        self.port = port

    def probe(self):
        socket.create_connection(("127.0.0.1", self.port), timeout=1).close()

    def start(self, timeout=15.0):
        self.proc = subprocess.Popen(self.argv, stdin=subprocess.DEVNULL, stdout=self.err, stderr=self.err,
                                     start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            try:
                self.probe()
                self.addrs["tcp"] = f"127.0.0.1:{self.port}"
                return None
            except OSError:
                time.sleep(0.05)
        status = self.proc.poll()
        self.stop()
        self.err.seek(0)
        lines = self.err.read().decode(errors="replace").strip().splitlines()
        return f"{self.name} did not answer on 127.0.0.1:{self.port} (exit {status}): {lines[-1] if lines else ''}"


class Redis(Polled):
    """redis-server on a free port of 127.0.0.1, no config file, nothing
    saved to disk (`--save ''`, `--appendonly no`, its directory `work`),
    in the foreground, pinned to `cpu`; ready when it answers PING."""

    def __init__(self, work, cpu):
        port = free_port()
        super().__init__("redis-server", ["redis-server", "--port", str(port), "--bind", "127.0.0.1",
                                          "--save", "", "--appendonly", "no", "--daemonize", "no",
                                          "--dir", work], port, cpu=cpu)

    def probe(self):
        with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            if not s.recv(64).startswith(b"+PONG"):
                raise OSError("no PONG")


class HAProxy(Polled):
    """HAProxy from tools/bench/peers/haproxy.cfg.in (`mode tcp`, `nbthread
    1`, no logging), in the foreground (`-db`), relaying a free port of
    127.0.0.1 to `upstream`; the configuration is written into `work`."""

    def __init__(self, name, upstream, work):
        port = free_port()
        with open(os.path.join(PEERS, "haproxy.cfg.in"), encoding="utf-8") as f:
            conf = f.read()
        for key, value in {"@LISTEN@": f"127.0.0.1:{port}", "@UPSTREAM@": upstream}.items():
            conf = conf.replace(key, value)
        path = os.path.join(work, "haproxy.cfg")
        with open(path, "w", encoding="utf-8") as f:
            f.write(conf)
        super().__init__(name, [haproxy_path() or "haproxy", "-db", "-f", path], port)


def children(pid):
    """The PIDs whose parent is `pid`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                    if int(f.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(name))
            except (OSError, IndexError, ValueError):
                pass
    return found


def epoll_sizes(pids):
    """How many descriptors each epoll instance of `pids` watches: the
    `tfd:` lines of /proc/PID/fdinfo/FD for every FD that is an
    `anon_inode:[eventpoll]`. {(pid, fd): count}."""
    sizes = {}
    for pid in pids:
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(f"/proc/{pid}/fd/{fd}") != "anon_inode:[eventpoll]":
                    continue
                with open(f"/proc/{pid}/fdinfo/{fd}", encoding="ascii") as f:
                    sizes[(pid, int(fd))] = sum(1 for line in f if line.startswith("tfd:"))
            except OSError:
                pass
    return sizes


def thread_cpu(pids):
    """{(pid, tid): CPU seconds} of every thread of `pids`, from schedstat."""
    times = {}
    for pid in pids:
        try:
            tids = os.listdir(f"/proc/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", encoding="ascii") as f:
                    times[(pid, int(tid))] = int(f.read().split()[0]) / 1e9
            except (OSError, ValueError, IndexError):
                pass
    return times


# --------------------------------------------------------------- loadgen


def run_loadgen(args, timeout, skip=(), measured=None, pin=True):
    """Runs loadgen pinned to the client CPU; (exit code, JSON or None,
    stderr). With `measured` (a dict), also measures the CPU that every
    other process (but those in `skip`) used while loadgen ran, in cores,
    into measured["cpu"]."""
    pinning = ["taskset", "-c", CLIENT_CPU] if pin else []
    proc = subprocess.Popen([*pinning, LOADGEN, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    skip = set(skip) | {proc.pid, os.getpid()}
    before, t0 = process_ticks(), time.monotonic()
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        return None, None, f"loadgen ran past {timeout:.0f} s"
    if measured is not None:
        after, t1 = process_ticks(), time.monotonic()
        ticks = sum(n - before.get(pid, 0) for pid, n in after.items() if pid not in skip)
        measured["cpu"] = ticks / os.sysconf("SC_CLK_TCK") / max(t1 - t0, 1e-3)
    return proc.returncode, last_json(out), err.strip()


PF_KTHREAD = 0x00200000


def process_ticks():
    """{pid: utime + stime} of every user-space process (all its threads),
    from /proc/PID/stat. Kernel threads are left out: on loopback,
    ksoftirqd runs the benchmark's own TCP work when softirqs pile up."""
    ticks = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            if not int(fields[6]) & PF_KTHREAD:
                ticks[int(name)] = int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass  # a process that just ended
    return ticks


def last_json(text):
    """The last line of `text` that is a JSON object, or None."""
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


class Perf:
    """Counts a process's system calls over the measured window with
    `perf stat -e raw_syscalls:sys_enter`, when perf can."""

    def __init__(self, pid, after, seconds):
        self.proc = None
        self.out = tempfile.NamedTemporaryFile(suffix=".perf", delete=False)
        self.out.close()
        if not have("perf"):
            return
        script = (f"sleep {after}; exec perf stat -x, -e raw_syscalls:sys_enter -o {self.out.name} "
                  f"-p {pid} -- sleep {seconds}")
        self.proc = subprocess.Popen(["sh", "-c", script], stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)

    def count(self):
        if self.proc is None:
            return None
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return None
        try:
            with open(self.out.name, encoding="utf-8") as f:
                for line in f:
                    parts = line.split(",")
                    if len(parts) > 2 and parts[2] == "raw_syscalls:sys_enter" and parts[0].isdigit():
                        return int(parts[0])
        finally:
            os.unlink(self.out.name)
        return None


# ------------------------------------------------------------ the rows


TOKIO = ["--flavor", "current_thread", "--nodelay"]  # TCP_NODELAY, as every other row sets


def echo_rows(args):
    ex = args.examples
    rows = [
        ("tokio_ct", [f"{PEERS}/target/release/tokio_echo", *TOKIO, "127.0.0.1:0"]),
        ("tokio_mt", [f"{PEERS}/target/release/tokio_echo", "--flavor", "multi_thread", "--workers", "2",
                      "--nodelay", "127.0.0.1:0"]),
        ("c_epoll", [f"{WORK}/c_epoll_echo", "127.0.0.1:0"]),
        ("py_asyncio", ["python3", f"{PEERS}/py_asyncio_echo.py", "127.0.0.1:0"]),
        ("evloop", [f"{ex}/echo", "--tcp", "127.0.0.1:0"]),
    ]
    rows += [(name, [*cmd.split(), "--tcp", "127.0.0.1:0"]) for name, cmd in args.server]
    return [(name, lambda argv=argv, name=name: Server(name, argv, ["tcp"])) for name, argv in rows]


def chat_rows(args):
    ex = args.examples
    rows = [
        ("tokio_ct", [f"{PEERS}/target/release/tokio_chat", *TOKIO, "127.0.0.1:0"]),
        ("evloop", [f"{ex}/chat", "--tcp", "127.0.0.1:0", "--max-clients", "20000"]),
    ]
    rows += [(name, [*cmd.split(), "--tcp", "127.0.0.1:0"]) for name, cmd in args.server]
    return [(name, lambda argv=argv, name=name: Server(name, argv, ["tcp"])) for name, argv in rows]


def file_rows(args, data):
    """(row, make the server, which announce kind, protocol)."""
    ex = args.examples
    tokio = [f"{PEERS}/target/release/tokio_files", *TOKIO, "--root", data]
    rows = [
        ("nginx", lambda: Nginx("nginx", data, WORK), "http", "http"),
        ("tokio_files", lambda: Server("tokio_files", [*tokio, "127.0.0.1:0"], ["tcp"]), "tcp", "plain"),
        ("tokio_files_256k", lambda: Server("tokio_files_256k", [*tokio, "--buf", "262144", "127.0.0.1:0"],
                                            ["tcp"]), "tcp", "plain"),
    ]
    evloop_argv = [f"{ex}/file_server", "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--root", data]
    rows.append(("evloop", lambda: Server("evloop", evloop_argv, ["tcp", "http"]), "tcp", "plain"))
    rows.append(("evloop (http)", lambda: Server("evloop (http)", evloop_argv, ["tcp", "http"]),
                 "http", "http"))
    for name, cmd in args.server:
        argv = [*cmd.split(), "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--root", data]
        rows.append((name, lambda argv=argv, name=name: Server(name, argv, ["tcp", "http"]), "tcp", "plain"))
        rows.append((f"{name} (http)", lambda argv=argv, name=name: Server(f"{name} (http)", argv,
                                                                           ["tcp", "http"]), "http", "http"))
    return rows


def tls_file_rows(args, data, cert, key):
    """The HTTPS file servers: (row, make the server, announce kind)."""
    tls = ["--cert", cert, "--key", key]
    evloop_argv = [f"{args.examples}/file_server", "--https", "127.0.0.1:0", *tls, "--root", data]
    rows = [("nginx_ssl", lambda: Nginx("nginx_ssl", data, WORK, tls=(cert, key)), "https"),
            ("evloop", lambda: Server("evloop", evloop_argv, ["https"]), "https")]
    for name, cmd in args.server:
        argv = [*cmd.split(), "--https", "127.0.0.1:0", *tls, "--root", data]
        rows.append((name, lambda argv=argv, name=name: Server(name, argv, ["https"]), "https"))
    return [row for row in rows if selected(args, row[0])]


def tls_echo_rows(args, cert, key, plain=False):
    """The echo servers over TLS: (row, make the server, announce kind);
    with `plain`, first evloop's echo without TLS."""
    tls = ["--cert", cert, "--key", key]
    rows = [("evloop (plain)", [f"{args.examples}/echo", "--tcp", "127.0.0.1:0"], "tcp")] if plain else []
    rows += [
        ("tokio_rustls_echo", [f"{PEERS}/target/release/tokio_rustls_echo", *TOKIO, *tls, "127.0.0.1:0"], "tls"),
        ("evloop", [f"{args.examples}/echo", "--tls", "127.0.0.1:0", *tls], "tls"),
    ]
    rows += [(name, [*cmd.split(), "--tls", "127.0.0.1:0", *tls], "tls") for name, cmd in args.server]
    return [(name, lambda argv=argv, name=name, kind=kind: Server(name, argv, [kind]), kind)
            for name, argv, kind in rows if selected(args, name)]


def selected(args, name):
    return not args.rows or name in args.rows


class Spread:
    """The connection spread over a server's epoll instances, sampled
    `at` seconds after it starts, and its threads' CPU until finish()."""

    def __init__(self, pids, at):
        import threading
        self.pids = pids
        self.before = epoll_sizes(pids)
        self.cpu0, self.t0 = thread_cpu(pids), time.monotonic()
        self.during = {}
        self.timer = threading.Timer(at, self.sample)
        self.timer.start()

    def sample(self):
        self.during = epoll_sizes(self.pids)

    def finish(self):
        self.timer.join()
        cpu1, t1 = thread_cpu(self.pids), time.monotonic()
        conns = sorted((n - self.before.get(k, 0) for k, n in self.during.items()), reverse=True)
        shares = sorted(((cpu1[k] - self.cpu0.get(k, 0.0)) / (t1 - self.t0) for k in cpu1), reverse=True)
        return {"epoll_conns": conns,
                "epoll_max_min": conns[0] / conns[-1] if len(conns) > 1 and conns[-1] > 0 else None,
                "thread_cpu": [round(x, 2) for x in shares if x >= 0.01]}


# --------------------------------------------------------- one measure


def measure(args, scenario, table, server, loadgen_args, record, timeout, perf_window=None,
            pin=True, spread_at=None):
    """Starts `server`, runs loadgen with `loadgen_args(addr, pids)`, stops
    the server; returns the JSON line, with the row's fields added. With
    `spread_at` (seconds into loadgen's run), also records how many
    connections each of the server's epoll instances held then, and each
    server thread's share of a core over loadgen's run."""
    quiet = wait_quiet(limit=args.quiet_limit)
    if quiet is None:
        log(f"run.py: the machine was not quiet for {args.quiet_limit:.0f} s; measuring {server.name} anyway")
    failure = server.start()
    result = {"row": server.name, "scenario": scenario, "table": table, "server_cmd": server.argv,
              "quiet_wait_s": quiet}
    if failure:
        result.update(ok=False, failure=failure)
        record(result)
        return result
    try:
        argv = loadgen_args(server.addrs, ",".join(str(p) for p in server.pids))
        perf = Perf(server.pids[0], *perf_window) if perf_window and args.perf else None
        skip = set(server.pids) | ({perf.proc.pid} if perf and perf.proc else set())
        measured = {}
        spread = Spread(server.pids, spread_at) if spread_at else None
        rc, line, err = run_loadgen(argv, timeout, skip=skip, measured=measured, pin=pin)
        syscalls = perf.count() if perf else None
        if spread:
            result.update(spread.finish())
    finally:
        server.stop()
    if line is None:
        result.update(ok=False, failure=f"loadgen exit {rc}: {err.splitlines()[-1] if err else ''}")
    else:
        result.update(line)
        result["ok"] = rc == 0
        if rc != 0:
            result["failure"] = f"loadgen exit {rc}: {err.splitlines()[-1] if err else ''}"
        if syscalls is not None and line.get("rps"):
            # perf counted over its own window, inside loadgen's: per
            # request at the rate loadgen measured.
            result["sys_per_req"] = syscalls / (line["rps"] * perf_window[1])
        if "cpu" in measured:
            result["other_procs_cpu"] = round(measured["cpu"], 3)
    record(result)
    return result


# ----------------------------------------------------------- the tables


def fmt(value, spec=""):
    if value is None:
        return "-"
    if spec == ",":
        return f"{round(value):,}"
    return format(value, spec)


def print_markdown(title, head, body):
    """A titled markdown table, its columns padded to line up."""
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    print(f"\n### {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for line in body:
        print("| " + " | ".join(str(c).ljust(w) for c, w in zip(line, widths)) + " |")


def print_table(title, columns, rows, ref_name, ratio_key, lower_is_better=False):
    """One markdown table. `columns` are (heading, key, format); the ratio
    column is each row's `ratio_key` over the reference row's."""
    ref = next((r for r in rows if r["row"] == ref_name and r.get(ratio_key)), None)
    head = ["server", *(c[0] for c in columns), f"vs {ref_name}", "ok"]
    body = []
    for r in rows:
        if r.get("failure") and ratio_key not in r:
            body.append([r["row"], *("-" for _ in columns), "-", "NO: " + r["failure"]])
            continue
        ratio = None
        if ref and r.get(ratio_key) is not None:
            ratio = r[ratio_key] / ref[ratio_key]
        cells = [fmt(r.get(key), spec) for _, key, spec in columns]
        body.append([r["row"], *cells, fmt(ratio, ".2f"), "yes" if r.get("ok") else "NO"])
    print_markdown(title, head, body)
    if lower_is_better:
        print(f"\n(ratio on {ratio_key}: lower is better)")
    sys.stdout.flush()


CPU_COLUMNS = [("srv cpu", "server_cpu", ".2f"), ("cli cpu", "client_cpu", ".2f"),
               ("other cpu", "other_cpu", ".2f"), ("other procs", "other_procs_cpu", ".2f")]


def scenario_echo(args, record):
    warmup = 0.2 if args.quick else 1
    duration = args.duration or (1 if args.quick else 5)
    tables = [
        ("64 B, 100 conns, depth 1", 100, 64, None),
        ("64 B, 1000 conns, depth 1", 100 if args.quick else 1000, 64, None),
        ("4 KiB, 100 conns, depth 1", 100, 4096, None),
        ("64 B, 100 conns, paced at 50,000 req/s", 100, 64, 5000 if args.quick else 50000),
    ]
    for title, conns, size, rate in tables:
        rows = []
        for name, make in echo_rows(args):
            if not selected(args, name):
                continue

            def argv(addrs, pids, conns=conns, size=size, rate=rate):
                a = ["echo", "--tcp", addrs["tcp"], "--conns", str(conns), "--size", str(size),
                     "--depth", "1", "--duration", str(duration), "--warmup", str(warmup), "--pid", pids]
                return a + (["--rate", str(rate)] if rate else [])

            rows.append(measure(args, "echo", title, make(), argv, record, timeout=duration + 60,
                                perf_window=(warmup + 0.3, duration - 0.5)))
        columns = [("rps", "rps", ","), ("MB/s", "mb_s", ".1f"), ("sys/req", "sys_per_req", ".2f"),
                   ("p50 µs", "p50_us", ","), ("p99 µs", "p99_us", ","), ("errors", "errors", ""),
                   *CPU_COLUMNS]
        if rate:
            columns = [("srv µs/req", "server_us_per_req", ".2f"), *columns[:1], ("target", "rate", ","),
                       *columns[2:]]
            print_table(title, columns, rows, "tokio_ct", "server_us_per_req", lower_is_better=True)
        else:
            print_table(title, columns, rows, "tokio_ct", "rps")


def scenario_idle(args, record):
    conns = args.conns or (1000 if args.quick else 10000)
    rows = []
    for name, make in echo_rows(args):
        if not selected(args, name):
            continue
        rows.append(measure(args, "idle", f"{conns} idle conns", make(),
                            lambda addrs, pids: ["idle", "--tcp", addrs["tcp"], "--conns", str(conns),
                                                 "--hold", "1" if args.quick else "2", "--pid", pids],
                            record, timeout=120))
    print_table(f"{conns} idle conns",
                [("bytes/conn", "bytes_per_conn", ","), ("accepted", "accepted", ""),
                 ("RSS before KiB", "rss_before_kib", ","), ("RSS after KiB", "rss_after_kib", ",")],
                rows, "tokio_ct", "bytes_per_conn", lower_is_better=True)


def scenario_files(args, record):
    if nginx_path() is None:
        sys.exit("run.py: files needs nginx (apt-get install nginx)")
    data = args.data
    big_size = (64 << 20) if args.quick else BIG
    fname = "quick.bin" if args.quick else "big.bin"
    make_data(data, fname, big_size)
    duration = args.duration or (1 if args.quick else 5)
    for conns in (1, 8):
        title = f"{big_size >> 20} MiB file, {conns} concurrent download{'s' if conns > 1 else ''}"
        rows = []
        for name, make, kind, proto in file_rows(args, data):
            if not selected(args, name):
                continue
            argv = (lambda addrs, pids, kind=kind, proto=proto, conns=conns:
                    ["download", "--tcp", addrs[kind], "--name", fname, "--conns", str(conns),
                     "--expect-bytes", str(big_size), "--duration", str(duration), "--proto", proto,
                     "--pid", pids])
            rows.append(measure(args, "files", title, make(), argv, record, timeout=duration + 90))
        print_table(title, [("GB/s", "gb_s", ".2f"), ("downloads", "downloads", ""), *CPU_COLUMNS],
                    rows, "nginx", "gb_s")


def scenario_chat(args, record):
    duration = args.duration or (1 if args.quick else 5)
    tables = [(20, 2, 100) if args.quick else (100, 10, 1000),
              (100, 2, 50) if args.quick else (1000, 10, 200)]
    for receivers, senders, rate in tables:
        title = f"{receivers} receivers + {senders} senders, {rate} lines/s"
        rows = []
        for name, make in chat_rows(args):
            if not selected(args, name):
                continue
            argv = (lambda addrs, pids, r=receivers, s=senders, rate=rate:
                    ["chat", "--tcp", addrs["tcp"], "--receivers", str(r), "--senders", str(s),
                     "--rate", str(rate), "--duration", str(duration), "--pid", pids])
            rows.append(measure(args, "chat", title, make(), argv, record, timeout=duration + 90))
        print_table(title, [("p50 µs", "p50_us", ","), ("p99 µs", "p99_us", ","),
                            ("deliveries/s", "deliveries_per_s", ","), ("delivered", "delivered", ".4f"),
                            ("srv µs/line", "server_us_per_line", ".1f"), *CPU_COLUMNS],
                    rows, "tokio_ct", "p99_us", lower_is_better=True)


def shard_rows(args, kind):
    """The rows of the shards scenario: nothing pinned, two cores for the
    server (and the load)."""
    program = "chat" if kind == "chat" else "echo"
    mt = [f"{PEERS}/target/release/tokio_{program}", "--flavor", "multi_thread", "--workers", "2",
          "--nodelay", "127.0.0.1:0"]
    rows = [("tokio_mt", lambda: Server("tokio_mt", mt, ["tcp"], pin=False))]
    if program == "echo":
        c = f"{WORK}/c_epoll_echo"
        rows.append(("c_epoll_x2", lambda: Pair("c_epoll_x2", lambda addr: [c, addr, "--reuseport"])))
    extra = ["--max-clients", "20000"] if kind == "chat" else []
    # Paced, one shard beside two: what sharding costs per request.
    threads = [("evloop", "2", [])]
    if kind == "paced":
        threads.append(("evloop_1", "1", []))
    if kind == "echo":
        # The connection spread with the least-connections hand-off.
        threads.append(("evloop_balance", "2", ["--balance"]))
    for name, n, more in threads:
        argv = [f"{args.examples}/{program}", "--threads", n, *more, "--tcp", "127.0.0.1:0", *extra]
        rows.append((name, lambda argv=argv, name=name: Server(name, argv, ["tcp"], pin=False)))
    return [(n, m) for n, m in rows if selected(args, n)]


def measure_wrk(args, server, record, table, duration):
    """wrk -t1 -c50 GETs a 1 KiB file over keep-alive; the server's CPU
    (all its processes and threads) over the run."""
    quiet = wait_quiet(limit=args.quiet_limit)
    result = {"row": server.name, "scenario": "shards", "table": table, "server_cmd": server.argv,
              "quiet_wait_s": quiet}
    failure = server.start()
    if failure:
        result.update(ok=False, failure=failure)
        record(result)
        return result
    try:
        pids = server.pids
        cpu0 = sum(thread_cpu(pids).values())
        t0 = time.monotonic()
        proc = subprocess.Popen(["wrk", "-t1", "-c50", f"-d{duration:g}s", "--latency",
                                 f"http://{server.addrs['http']}/small.bin"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        out, err = proc.communicate(timeout=duration + 30)
        t1 = time.monotonic()
        cpu1 = sum(thread_cpu(pids).values())
    finally:
        server.stop()
    rps = p99 = None
    for line in out.splitlines():
        words = line.split()
        if line.startswith("Requests/sec:"):
            rps = float(words[1])
        elif words[:1] == ["99%"]:
            p99 = wrk_us(words[1])
    result.update(rps=rps, p99_us=p99, server_cpu=round((cpu1 - cpu0) / (t1 - t0), 2),
                  ok=proc.returncode == 0 and rps is not None and "Non-2xx" not in out)
    if not result["ok"]:
        result["failure"] = f"wrk exit {proc.returncode}: {(err or out).strip()[-200:]}"
    record(result)
    return result


def wrk_us(text):
    """wrk's latency ('730.00us', '1.51ms', '2.01s') in microseconds."""
    for unit, factor in (("us", 1), ("ms", 1e3), ("s", 1e6)):
        if text.endswith(unit):
            return float(text[: -len(unit)]) * factor
    return None


def scenario_shards(args, record):
    """Several cores for the server: nothing is pinned (two cores here, so
    the load shares them with the server)."""
    warmup = 0.2 if args.quick else 1
    duration = args.duration or (1 if args.quick else 5)
    conns = args.conns or (100 if args.quick else 1000)
    # Closed-loop echo.
    title = f"echo 64 B, {conns} conns, depth 1 (unpinned)"
    rows = [measure(args, "shards", title, make(),
                    lambda addrs, pids: ["echo", "--tcp", addrs["tcp"], "--conns", str(conns), "--size", "64",
                                         "--depth", "1", "--duration", str(duration), "--warmup",
                                         str(warmup), "--pid", pids],
                    record, timeout=duration + 60, pin=False, spread_at=warmup + duration / 2)
            for name, make in shard_rows(args, "echo")]
    print_table(title, [("rps", "rps", ","), ("p99 µs", "p99_us", ","), ("conns per epoll", "epoll_conns", ""),
                        ("max/min", "epoll_max_min", ".2f"), ("cpu per thread", "thread_cpu", ""),
                        *CPU_COLUMNS], rows, "tokio_mt", "rps")
    # Paced echo: what sharding costs per request.
    rate = 5000 if args.quick else 50000
    title = f"echo 64 B, 100 conns, paced at {rate:,} req/s (unpinned)"
    rows = [measure(args, "shards", title, make(),
                    lambda addrs, pids: ["echo", "--tcp", addrs["tcp"], "--conns", "100", "--size", "64",
                                         "--depth", "1", "--duration", str(duration), "--warmup",
                                         str(warmup), "--rate", str(rate), "--pid", pids],
                    record, timeout=duration + 60, pin=False)
            for name, make in shard_rows(args, "paced")]
    print_table(title, [("srv µs/req", "server_us_per_req", ".2f"), ("rps", "rps", ","),
                        ("p99 µs", "p99_us", ","), *CPU_COLUMNS],
                rows, "tokio_mt", "server_us_per_req", lower_is_better=True)
    # Chat.
    receivers, rate = (100, 50) if args.quick else (1000, 200)
    title = f"chat {receivers} receivers + 10 senders, {rate} lines/s (unpinned)"
    rows = [measure(args, "shards", title, make(),
                    lambda addrs, pids: ["chat", "--tcp", addrs["tcp"], "--receivers", str(receivers),
                                         "--senders", "10", "--rate", str(rate), "--duration", str(duration),
                                         "--pid", pids],
                    record, timeout=duration + 90, pin=False)
            for name, make in shard_rows(args, "chat")]
    print_table(title, [("p50 µs", "p50_us", ","), ("p99 µs", "p99_us", ","),
                        ("delivered", "delivered", ".4f"), ("srv µs/line", "server_us_per_line", ".1f"),
                        *CPU_COLUMNS], rows, "tokio_mt", "p99_us", lower_is_better=True)
    # Files over keep-alive with wrk.
    if nginx_path() is None or not have("wrk"):
        log("run.py: shards: the wrk table needs nginx and wrk (apt-get install nginx wrk); skipped")
        return
    make_data(args.data, "quick.bin" if args.quick else "big.bin", (64 << 20) if args.quick else BIG)
    title = "wrk -t1 -c50, 1 KiB file over keep-alive (unpinned)"
    ex = args.examples
    servers = [("nginx_x2", lambda: Nginx("nginx_x2", args.data, WORK, workers=2, pin=False)),
               ("evloop", lambda: Server("evloop", [f"{ex}/file_server", "--threads", "2", "--http",
                                                     "127.0.0.1:0", "--root", args.data], ["http"], pin=False))]
    rows = [measure_wrk(args, make(), record, title, duration) for name, make in servers if selected(args, name)]
    print_table(title, [("req/s", "rps", ","), ("p99 µs", "p99_us", ","), ("srv cpu", "server_cpu", ".2f")],
                rows, "nginx_x2", "rps")


def scenario_tls(args, record):
    """Files, new connections, echo and idle connections over TLS: evloop's
    TLS listeners beside nginx (ssl) and tokio-rustls, every server pinned
    as in the plain scenarios. loadgen verifies the server's certificate
    against the run's own (--cacert) in every table."""
    if nginx_path() is None:
        sys.exit("run.py: tls needs nginx (apt-get install nginx)")
    cert, key = make_cert(WORK)
    data = args.data
    big_size = (64 << 20) if args.quick else BIG
    fname = "quick.bin" if args.quick else "big.bin"
    make_data(data, fname, big_size)
    warmup = 0.2 if args.quick else 1
    duration = args.duration or (1 if args.quick else 5)
    ca = ["--tls", "--cacert", cert]
    size = "1 GiB" if big_size == BIG else f"{big_size >> 20} MiB"
    # A big file over HTTPS: both sides encrypt or decrypt every byte.
    for conns in (1, 8):
        title = f"TLS: {size} file over HTTPS, {conns} concurrent download{'s' if conns > 1 else ''}"
        rows = []
        for name, make, kind in tls_file_rows(args, data, cert, key):
            argv = (lambda addrs, pids, kind=kind, conns=conns:
                    ["download", "--tcp", addrs[kind], "--name", fname, "--conns", str(conns),
                     "--expect-bytes", str(big_size), "--duration", str(duration), "--proto", "http",
                     *ca, "--pid", pids])
            rows.append(measure(args, "tls", title, make(), argv, record, timeout=duration + 90))
        print_table(title, [("GB/s", "gb_s", ".2f"), ("downloads", "downloads", ""), ("errors", "errors", ""),
                            *CPU_COLUMNS], rows, "nginx_ssl", "gb_s")
    # A new connection, and so a full handshake, for every 1 KiB download.
    clients = 10 if args.quick else 50
    title = f"TLS: new connections/s, {clients} at once, each GET 1 KiB + Connection: close"
    rows = []
    for name, make, kind in tls_file_rows(args, data, cert, key):
        argv = (lambda addrs, pids, kind=kind:
                ["download", "--tcp", addrs[kind], "--name", "small.bin", "--conns", str(clients),
                 "--expect-bytes", "1024", "--duration", str(duration), "--proto", "http", *ca, "--pid", pids])
        rows.append(measure(args, "tls", title, make(), argv, record, timeout=duration + 90))
    print_table(title, [("conns/s", "downloads_per_s", ","), ("srv µs/conn", "server_us_per_download", ".1f"),
                        ("p50 ms", "p50_ms", ".2f"), ("p99 ms", "p99_ms", ".2f"), ("errors", "errors", ""),
                        *CPU_COLUMNS], rows, "nginx_ssl", "downloads_per_s")
    # Echo over TLS, paced: the server's cost per request, handshakes done.
    rate = 2000 if args.quick else 20000
    title = f"TLS: echo 64 B, 100 conns, paced at {rate:,} req/s"
    rows = []
    for name, make, kind in tls_echo_rows(args, cert, key):
        argv = (lambda addrs, pids, kind=kind:
                ["echo", "--tcp", addrs[kind], "--conns", "100", "--size", "64", "--depth", "1",
                 "--rate", str(rate), "--duration", str(duration), "--warmup", str(warmup), *ca,
                 "--pid", pids])
        rows.append(measure(args, "tls", title, make(), argv, record, timeout=duration + 60,
                            perf_window=(warmup + 0.3, duration - 0.5)))
    print_table(title, [("srv µs/req", "server_us_per_req", ".2f"), ("rps", "rps", ","),
                        ("target", "rate", ","), ("sys/req", "sys_per_req", ".2f"), ("p50 µs", "p50_us", ","),
                        ("p99 µs", "p99_us", ","), ("errors", "errors", ""), *CPU_COLUMNS],
                rows, "tokio_rustls_echo", "server_us_per_req", lower_is_better=True)
    # Idle connections once their handshake is done: what TLS adds to each.
    conns = args.conns or (1000 if args.quick else 10000)
    title = f"TLS: {conns} idle conns after the handshake"
    rows = []
    for name, make, kind in tls_echo_rows(args, cert, key, plain=True):
        argv = (lambda addrs, pids, kind=kind:
                ["idle", "--tcp", addrs[kind], "--conns", str(conns), "--hold", "1" if args.quick else "2",
                 *(ca if kind == "tls" else []), "--pid", pids])
        rows.append(measure(args, "tls", title, make(), argv, record, timeout=120))
    print_table(title, [("bytes/conn", "bytes_per_conn", ","), ("accepted", "accepted", ""),
                        ("RSS before KiB", "rss_before_kib", ","), ("RSS after KiB", "rss_after_kib", ",")],
                rows, "tokio_rustls_echo", "bytes_per_conn", lower_is_better=True)


PROXY_TESTS = ("PING_INLINE", "PING_MBULK", "SET", "GET")


def measure_redis(args, table, name, proxy, redis, requests, record, run):
    """Starts `proxy` (None: the direct row), runs redis-benchmark pinned
    to the client CPU against it (or straight against `redis`), stops it.
    Records the requests/s, p50 and p99 of each test, and the CPU time
    (schedstat) the proxy and redis-server spent per request over
    redis-benchmark's whole run; returns the record."""
    quiet = wait_quiet(limit=args.quiet_limit)
    if quiet is None:
        log(f"run.py: the machine was not quiet for {args.quiet_limit:.0f} s; measuring {name} anyway")
    result = {"row": name, "scenario": "proxy", "table": table, "run": run,
              "server_cmd": proxy.argv if proxy else None, "redis_cmd": redis.argv, "requests": requests,
              "quiet_wait_s": quiet}
    if proxy is not None:
        failure = proxy.start()
        if failure:
            result.update(ok=False, failure=failure)
            record(result)
            return result
    host, port = (proxy or redis).addrs["tcp"].rsplit(":", 1)
    argv = ["taskset", "-c", CLIENT_CPU, "redis-benchmark", "-h", host, "-p", port, "--csv",
            "-n", str(requests), "-t", "ping,set,get"]
    result["bench_cmd"] = argv
    # redis-benchmark never gives up on a server it cannot reach: bounded
    # by a deadline of its own, generous for 4 tests at 2,000 requests/s.
    timeout = 30 + len(PROXY_TESTS) * requests / 2000
    try:
        proxy_pids = proxy.pids if proxy else []
        proxy0, redis0 = sum(thread_cpu(proxy_pids).values()), sum(thread_cpu(redis.pids).values())
        kids0, others0, t0 = resource.getrusage(resource.RUSAGE_CHILDREN), process_ticks(), time.monotonic()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True)
        late = False
        try:
            out, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            late = True
        t1, others1, kids1 = time.monotonic(), process_ticks(), resource.getrusage(resource.RUSAGE_CHILDREN)
        proxy1, redis1 = sum(thread_cpu(proxy_pids).values()), sum(thread_cpu(redis.pids).values())
    finally:
        if proxy is not None:
            proxy.stop()
    # --csv: one quoted line per test, no progress lines (-q writes each
    # result over carriage-return progress lines).
    tests = {}
    for row in csv.DictReader(line for line in out.splitlines() if line.startswith('"')):
        try:
            tests[row["test"]] = {"rps": float(row["rps"]), "p50_ms": float(row["p50_latency_ms"]),
                                  "p99_ms": float(row["p99_latency_ms"])}
        except (KeyError, TypeError, ValueError):
            pass
    wall = max(t1 - t0, 1e-3)
    done = requests * len(tests)
    skip = {*proxy_pids, *redis.pids, proc.pid, os.getpid()}
    others = sum(n - others0.get(pid, 0) for pid, n in others1.items() if pid not in skip)
    result.update(tests=tests, wall_s=round(wall, 3),
                  cli_cpu=round((kids1.ru_utime + kids1.ru_stime - kids0.ru_utime - kids0.ru_stime) / wall, 3),
                  redis_cpu=round((redis1 - redis0) / wall, 3),
                  other_procs_cpu=round(others / os.sysconf("SC_CLK_TCK") / wall, 3))
    for test in PROXY_TESTS:
        if test in tests:
            result["rps_" + test.lower()] = tests[test]["rps"]
    rates = [tests[t]["rps"] for t in PROXY_TESTS if tests.get(t, {}).get("rps")]
    if len(rates) == len(PROXY_TESTS):
        result["rps_geomean"] = round(math.prod(rates) ** (1 / len(rates)), 2)
    if done:
        result["redis_us_per_req"] = (redis1 - redis0) / done * 1e6
        if proxy is not None:
            result["proxy_us_per_req"] = (proxy1 - proxy0) / done * 1e6
            result["proxy_cpu"] = round((proxy1 - proxy0) / wall, 3)
    result["ok"] = proc.returncode == 0 and "rps_geomean" in result
    if not result["ok"]:
        missing = ",".join(t for t in PROXY_TESTS if t not in tests) or "none"
        last = (err or out).strip().splitlines()
        status = f"ran past {timeout:.0f} s, killed" if late else f"exit {proc.returncode}"
        result["failure"] = (f"redis-benchmark {status}, missing {missing}"
                             + (f": {last[-1][-200:]}" if last else ""))
    record(result)
    return result


def scenario_proxy(args, record):
    """A TCP proxy in front of a real redis-server: evloop's `proxy` example
    beside HAProxy (`mode tcp`, `nbthread 1`, peers/haproxy.cfg.in), both
    relaying to the same redis-server, measured with `redis-benchmark -n N
    -t ping,set,get` (N = --requests: 100,000, or 10,000 with --quick; 50
    clients, 3-byte values, no pipelining: its defaults), and the direct
    row: redis-benchmark straight to redis-server.

    Pinning: the proxy under test (evloop's or HAProxy, one thread each)
    runs alone on the server CPU, as every server of the other scenarios;
    redis-server and redis-benchmark share the client CPU, as the load
    generator does elsewhere. So every row loads the client CPU with the
    same redis work and the proxied rows add the proxy on a core of its
    own: the direct row is the same two processes on one core with no
    proxy between them, not a ceiling the proxied rows cannot pass.

    One redis-server serves the whole run. The rows run in rounds
    (direct, haproxy, evloop, then again), each proxy started afresh for
    each run, and the table gives, for each row, the better of its two
    runs, whole: the one with the higher geometric mean of the four
    requests/s (both runs are in the JSONL, and the `runs` column gives
    both means), since single runs on a loopback are noisy. `proxy µs/req`
    is the proxy's CPU time (all its threads, schedstat) over
    redis-benchmark's whole run, per request; `redis µs/req` the same for
    redis-server. The ratio column is each row's geometric mean over
    haproxy's; the line under the table gives evloop ÷ haproxy test by
    test."""
    for cmd in ("redis-server", "redis-benchmark"):
        if not have(cmd):
            sys.exit(f"run.py: proxy needs {cmd} (apt-get install redis-server redis-tools haproxy)")
    if haproxy_path() is None and selected(args, "haproxy"):
        sys.exit("run.py: proxy needs haproxy (apt-get install haproxy)")
    requests = args.requests or (10000 if args.quick else 100000)
    title = f"redis-benchmark -n {requests} -t ping,set,get: through a TCP proxy to redis-server"
    with tempfile.TemporaryDirectory(prefix="evloop-bench-proxy-") as work:
        redis = Redis(work, CLIENT_CPU)
        failure = redis.start()
        if failure:
            record({"row": "redis-server", "scenario": "proxy", "table": title, "server_cmd": redis.argv,
                    "ok": False, "failure": failure})
            return
        try:
            upstream = redis.addrs["tcp"]
            rows = [("direct", lambda: None),
                    ("haproxy", lambda: HAProxy("haproxy", upstream, work)),
                    ("evloop", lambda: Server("evloop", [f"{args.examples}/proxy", "--upstream", upstream,
                                                         "--tcp", "127.0.0.1:0"], ["tcp"]))]
            for name, cmd in args.server:
                argv = [*cmd.split(), "--upstream", upstream, "--tcp", "127.0.0.1:0"]
                rows.append((name, lambda argv=argv, name=name: Server(name, argv, ["tcp"])))
            rows = [(name, make) for name, make in rows if selected(args, name)]
            runs = {name: [] for name, _ in rows}
            for run in (1, 2):
                for name, make in rows:
                    runs[name].append(measure_redis(args, title, name, make(), redis, requests, record, run))
        finally:
            redis.stop()
    best = []
    for name, results in runs.items():
        pick = max(results, key=lambda r: (r.get("ok", False), r.get("rps_geomean") or 0))
        pick = dict(pick, runs=" / ".join(fmt(r.get("rps_geomean"), ",") for r in results))
        best.append(pick)
    print_table(title, [*((f"{t} req/s", "rps_" + t.lower(), ",") for t in PROXY_TESTS),
                        ("geomean req/s", "rps_geomean", ","), ("runs (geomean)", "runs", ""),
                        ("proxy µs/req", "proxy_us_per_req", ".2f"), ("proxy cpu", "proxy_cpu", ".2f"),
                        ("redis µs/req", "redis_us_per_req", ".2f"), ("redis cpu", "redis_cpu", ".2f"),
                        ("cli cpu", "cli_cpu", ".2f"),
                        ("other procs", "other_procs_cpu", ".2f")],
                best, "haproxy", "rps_geomean")
    ref = next((r for r in best if r["row"] == "haproxy" and r.get("ok")), None)
    for r in best:
        if ref is None or r["row"] in ("direct", "haproxy") or not r.get("ok"):
            continue
        ratios = ", ".join(f"{t} {r['rps_' + t.lower()] / ref['rps_' + t.lower()]:.2f}" for t in PROXY_TESTS)
        cpu = ""
        if r.get("proxy_us_per_req") and ref.get("proxy_us_per_req"):
            cpu = f"; proxy µs/req {r['proxy_us_per_req'] / ref['proxy_us_per_req']:.2f} (lower is better)"
        print(f"\n{r['row']} ÷ haproxy, req/s: {ratios}{cpu}")
    sys.stdout.flush()


# ----------------------------------------------------- chat over Redis


ROOM = "bench"


def log_text(server):
    """What `server` wrote to stderr so far. pread, not seek and read: the
    file's offset is shared with the child, whose writes it places."""
    fd = server.err.fileno()
    size = os.fstat(fd).st_size
    return os.pread(fd, size, 0).decode(errors="replace") if size else ""


def wait_in_room(servers, room, timeout):
    """Waits until every server has logged that it is in the room over
    Redis (`chat: in room NAME over Redis at ADDR`, RUST_LOG=info); None,
    or why not."""
    deadline = time.monotonic() + timeout
    want = f"chat: in room {room} over Redis at "
    while True:
        waiting = [s for s in servers if want not in log_text(s)]
        if not waiting:
            return None
        for s in waiting:
            if s.proc.poll() is not None:
                return f"{s.name} exited ({s.proc.returncode}): {s.first_err_line()}"
        if time.monotonic() > deadline:
            return f"{', '.join(s.name for s in waiting)}: no '{want.strip()}' line within {timeout:.0f} s"
        time.sleep(0.05)


class ChatProbe:
    """One member of a chat server, read line by line with a timeout."""

    def __init__(self, addr, timeout):
        host, port = addr.rsplit(":", 1)
        self.sock = socket.create_connection((host, int(port)), timeout=timeout)
        self.buf = b""
        welcome = self.line(time.monotonic() + timeout)
        if not welcome.startswith("* welcome "):
            raise OSError(f"{addr}: {welcome!r}, not a welcome")
        self.nick = welcome[len("* welcome "):]

    def line(self, deadline):
        while b"\n" not in self.buf:
            self.sock.settimeout(max(deadline - time.monotonic(), 0.01))
            chunk = self.sock.recv(65536)
            if not chunk:
                raise OSError("closed by the server")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.decode(errors="replace").rstrip("\r")

    def who(self, deadline):
        """The nicks of one `/who` answer (notices before it skipped)."""
        self.sock.sendall(b"/who\n")
        while True:
            line = self.line(deadline)
            if line.startswith("* online:"):
                return line[len("* online:"):].split()

    def close(self):
        try:
            self.sock.sendall(b"/quit\n")
        except OSError:
            pass
        self.sock.close()


def probe_room(addrs, timeout):
    """A member on each server, each polling `/who` until it lists the
    other's member: lines and notices do cross between the servers. None,
    or why not."""
    deadline = time.monotonic() + timeout
    probes = []
    try:
        probes = [ChatProbe(addr, timeout) for addr in addrs]
        for probe in probes:
            others = {p.nick for p in probes if p is not probe}
            while True:
                seen = set(probe.who(deadline))
                if others <= seen:
                    break
                if time.monotonic() > deadline:
                    return f"/who on one server never listed the other's member ({sorted(others - seen)})"
                time.sleep(0.05)
        return None
    except OSError as err:
        return f"probe: {err}"
    finally:
        for probe in probes:
            probe.close()


def scenario_redis_chat(args, record):
    """One chat room over two evloop chat servers and Redis: `chat --tcp
    127.0.0.1:0 --redis ADDR --room bench` twice, sharing one redis-server.
    loadgen spreads 1000 receivers and 10 senders (200 lines/s in all) over
    the two servers in turn (505 members each), and splits every delivery
    into *within one server* (the receiver is on its sender's server) and
    *across servers*; every line must reach every other member on both.
    Target: p99 across <= 2 x p99 within. `--quick`: 100 receivers, 50
    lines/s, 1 s.

    Pinning, as in proxy: the servers under test (both chat servers) on
    the server CPU, redis-server and loadgen on the client CPU. A line
    across therefore waits for its own server's turn, Redis, and the other
    server's turn on the same core: the two servers compete for CPU 0 as
    two machines would not.

    Readiness: each server is started with RUST_LOG=info and must log
    `chat: in room bench over Redis at ADDR`; then a member on each
    polls `/who` until it lists the other's member. CPU: loadgen reads
    each process's CPU time (schedstat) over its sending window
    (`server_cpu_each`): `µs/line` is that time per line sent, which for
    redis-server is its cost per line published, its upkeep of the room
    meanwhile included (each server refreshes its nicks and presence every
    second). The record's `server_cpu` and `server_us_per_line` sum all
    three processes; `chat_a_*`, `chat_b_*` and `redis_*` are each alone."""
    if not have("redis-server"):
        sys.exit("run.py: redis_chat needs redis-server (apt-get install redis-server)")
    duration = args.duration or (1 if args.quick else 5)
    receivers, senders, rate = (100, 10, 50) if args.quick else (1000, 10, 200)
    title = (f"chat over Redis: 2 servers, {receivers} receivers + {senders} senders, "
             f"{rate} lines/s")
    quiet = wait_quiet(limit=args.quiet_limit)
    if quiet is None:
        log(f"run.py: the machine was not quiet for {args.quiet_limit:.0f} s; measuring anyway")
    result = {"row": "evloop", "scenario": "redis_chat", "table": title, "quiet_wait_s": quiet,
              "room": ROOM}
    with tempfile.TemporaryDirectory(prefix="evloop-bench-redis-chat-") as work:
        redis = Redis(work, CLIENT_CPU)
        result["redis_cmd"] = redis.argv
        failure = redis.start()
        if failure:
            result.update(ok=False, failure=failure)
            record(result)
            print_redis_chat(title, result)
            return
        servers = []
        try:
            for name in ("chat_a", "chat_b"):
                argv = ["env", "RUST_LOG=info", f"{args.examples}/chat", "--tcp", "127.0.0.1:0",
                        "--redis", redis.addrs["tcp"], "--room", ROOM]
                servers.append(Server(name, argv, ["tcp"]))
            result["server_cmd"] = [s.argv for s in servers]
            for server in servers:
                failure = server.start()
                if failure:
                    break
            failure = failure or wait_in_room(servers, ROOM, 15.0)
            failure = failure or probe_room([s.addrs["tcp"] for s in servers], 10.0)
            if failure:
                result.update(ok=False, failure=failure)
            else:
                run_redis_chat(args, result, servers, redis, receivers, senders, rate, duration)
                if not args.quick:
                    measure_upkeep(result, servers, redis, (receivers + senders) // 2)
        finally:
            for server in servers:
                server.stop()
            redis.stop()
    record(result)
    print_redis_chat(title, result)
    if args.quick:
        return
    # The same room and load on one server, and on one server of two
    # shards (pinned to the same core): what each step costs per line.
    steps = [("one reactor", ["--threads", "1"]), ("two shards, one core", ["--threads", "2"])]
    picture = []
    for label, extra in steps:
        server = Server("chat", [f"{args.examples}/chat", "--tcp", "127.0.0.1:0", *extra], ["tcp"])
        row = {"row": label, "scenario": "redis_chat", "table": "the whole picture", "server_cmd": server.argv}
        failure = server.start()
        if failure:
            row.update(ok=False, failure=failure)
        else:
            try:
                argv = ["chat", "--tcp", server.addrs["tcp"], "--receivers", str(receivers), "--senders",
                        str(senders), "--rate", str(rate), "--duration", str(duration),
                        "--pid", str(server.proc.pid)]
                rc, line, err = run_loadgen(argv, duration + 90, skip=[server.proc.pid])
                row.update(line or {})
                row["ok"] = rc == 0 and line is not None
                if not row["ok"]:
                    row["failure"] = f"loadgen exit {rc}: {err.splitlines()[-1] if err else ''}"
            finally:
                server.stop()
        record(row)
        picture.append(row)
    print_picture(picture, result)


def print_picture(steps, over_redis):
    """One line per way of holding the room, the same load on each: its
    latency, the chat servers' CPU per line sent (all servers together)
    and Redis's."""
    body = []
    for r in steps:
        body.append([r["row"], fmt(r.get("within_p50_us") or r.get("p50_us"), ","),
                     fmt(r.get("within_p99_us") or r.get("p99_us"), ","), "-", "-",
                     fmt(r.get("server_us_per_line"), ".1f"), "-", fmt(r.get("delivered"), ".4f"),
                     fmt(r.get("other_cpu"), ".2f"), "yes" if r.get("ok") else "NO"])
    r = over_redis
    chat = [r.get("chat_a_us_per_line"), r.get("chat_b_us_per_line")]
    body.append(["two servers over Redis, one core", fmt(r.get("within_p50_us"), ","),
                 fmt(r.get("within_p99_us"), ","), fmt(r.get("across_p50_us"), ","),
                 fmt(r.get("across_p99_us"), ","),
                 fmt(sum(chat) if None not in chat else None, ".1f"), fmt(r.get("redis_us_per_line"), ".1f"),
                 fmt(r.get("delivered"), ".4f"), fmt(r.get("other_cpu"), ".2f"), "yes" if r.get("ok") else "NO"])
    print_markdown("the whole picture: the same room and load, held three ways (chat servers on one core)",
                   ["room held by", "p50 µs", "p99 µs", "p50 across µs", "p99 across µs", "chat µs/line",
                    "redis µs/line", "delivered", "other cpu", "ok"], body)
    sys.stdout.flush()


def run_redis_chat(args, result, servers, redis, receivers, senders, rate, duration):
    """Runs loadgen over the servers' addresses; its line and the CPU
    figures go into `result`."""
    pids = [*(s.proc.pid for s in servers), *redis.pids]
    argv = ["chat"]
    for server in servers:
        argv += ["--tcp", server.addrs["tcp"]]
    argv += ["--receivers", str(receivers), "--senders", str(senders), "--rate", str(rate),
             "--duration", str(duration), "--pid", ",".join(map(str, pids))]
    result["loadgen_args"] = argv
    redis0, t0 = sum(thread_cpu(redis.pids).values()), time.monotonic()
    measured = {}
    rc, line, err = run_loadgen(argv, duration + 90, skip=pids, measured=measured)
    # redis-server over loadgen's whole run (the room filling included),
    # beside the window's figure from loadgen.
    result["redis_cpu_whole_run"] = round((sum(thread_cpu(redis.pids).values()) - redis0)
                                          / max(time.monotonic() - t0, 1e-3), 3)
    if "cpu" in measured:
        result["other_procs_cpu"] = round(measured["cpu"], 3)
    if line is None:
        result.update(ok=False, failure=f"loadgen exit {rc}: {err.splitlines()[-1] if err else ''}")
        return
    result.update(line)
    result["ok"] = rc == 0
    if rc != 0:
        result["failure"] = f"loadgen exit {rc}: {err.splitlines()[-1] if err else ''}"
    names = [s.name for s in servers] + ["redis"]

    def each(key):
        values = [float(v) if v not in ("", "-") else None for v in str(line.get(key, "")).split(",")]
        return dict(zip(names, values)) if len(values) == len(names) else {}

    for name, value in each("server_cpu_each").items():
        result[f"{name}_cpu"] = value
    for name, value in each("server_us_per_line_each").items():
        result[f"{name}_us_per_line"] = value
    within, across = line.get("within_p99_us"), line.get("across_p99_us")
    if within and across is not None:
        result["p99_across_over_within"] = round(across / within, 3)
        result["p99_target_met"] = across <= 2 * within


def measure_upkeep(result, servers, redis, members):
    """Redis's CPU while the room is full and silent: `members` idle
    connections (loadgen idle, members that say nothing) held on each
    server, measured over 5 s once a member's `/who` lists them all. What
    each server's refresh every second costs Redis, apart from lines."""
    holds = [subprocess.Popen(["taskset", "-c", CLIENT_CPU, LOADGEN, "idle", "--tcp", s.addrs["tcp"],
                               "--conns", str(members), "--hold", "30", "--pid", str(s.proc.pid)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for s in servers]
    probe = None
    try:
        deadline = time.monotonic() + 20
        probe = ChatProbe(servers[0].addrs["tcp"], 20)
        while len(probe.who(deadline)) < len(servers) * members + 1:
            if time.monotonic() > deadline:
                result["upkeep_failure"] = "the idle members never all showed in /who"
                return
            time.sleep(0.1)
        skip = {*redis.pids, *(h.pid for h in holds), os.getpid(), *(s.proc.pid for s in servers)}
        redis0, ticks0, t0 = sum(thread_cpu(redis.pids).values()), process_ticks(), time.monotonic()
        time.sleep(5)
        redis1, ticks1, t1 = sum(thread_cpu(redis.pids).values()), process_ticks(), time.monotonic()
        others = sum(n - ticks0.get(pid, 0) for pid, n in ticks1.items() if pid not in skip)
        result["upkeep_members"] = len(servers) * members
        result["upkeep_redis_cpu"] = round((redis1 - redis0) / (t1 - t0), 4)
        result["upkeep_other_procs_cpu"] = round(others / os.sysconf("SC_CLK_TCK") / (t1 - t0), 3)
    except OSError as err:
        result["upkeep_failure"] = f"probe: {err}"
    finally:
        if probe:
            probe.close()
        for hold in holds:
            hold.kill()
            hold.wait()


def print_redis_chat(title, r):
    """The deliveries table (within one server, across servers), the p99
    ratio, and the CPU of each process."""
    if "within_expected" not in r:
        print_markdown(title, ["deliveries", "ok"], [["-", "NO: " + r.get("failure", "no result")]])
        sys.stdout.flush()
        return
    body = []
    for kind, label in (("within", "within one server"), ("across", "across servers")):
        body.append([label, fmt(r.get(f"{kind}_p50_us"), ","), fmt(r.get(f"{kind}_p99_us"), ","),
                     fmt(r.get(f"{kind}_max_us"), ","), fmt(r.get(f"{kind}_delivered"), ".4f"),
                     f"{fmt(r.get(f'{kind}_received'), ',')} / {fmt(r.get(f'{kind}_expected'), ',')}",
                     "yes" if r.get(f"{kind}_missing") == 0 and r.get("ok") else "NO"])
    print_markdown(title, ["deliveries", "p50 µs", "p99 µs", "max µs", "delivered", "received / expected",
                           "ok"], body)
    ratio = r.get("p99_across_over_within")
    if ratio is not None:
        verdict = "met" if r.get("p99_target_met") else "NOT met"
        print(f"\np99 across / p99 within: {ratio:.2f} (target <= 2.00: {verdict}); "
              f"{r.get('sent', 0):,} lines sent, members per server {r.get('members_per_server')}, "
              f"{r.get('missing', 0):,} deliveries missing")
    if r.get("failure"):
        print(f"\nNO: {r['failure']}")
    cpu = [["chat_a", fmt(r.get("chat_a_cpu"), ".2f"), fmt(r.get("chat_a_us_per_line"), ".1f")],
           ["chat_b", fmt(r.get("chat_b_cpu"), ".2f"), fmt(r.get("chat_b_us_per_line"), ".1f")],
           ["redis-server", fmt(r.get("redis_cpu"), ".2f"), fmt(r.get("redis_us_per_line"), ".2f")],
           ["loadgen", fmt(r.get("client_cpu"), ".2f"), "-"]]
    print_markdown("CPU over the sending window (share of one core; µs per line sent)",
                   ["process", "cpu", "µs/line"], cpu)
    print(f"\nother cpu {fmt(r.get('other_cpu'), '.2f')}, other procs {fmt(r.get('other_procs_cpu'), '.2f')}; "
          f"redis-server over loadgen's whole run (room filling included): "
          f"{fmt(r.get('redis_cpu_whole_run'), '.3f')} of a core")
    if "upkeep_redis_cpu" in r:
        print(f"the room's upkeep: redis-server {r['upkeep_redis_cpu']:.4f} of a core with "
              f"{r['upkeep_members']:,} silent members (other procs {r['upkeep_other_procs_cpu']:.3f})")
    elif r.get("upkeep_failure"):
        print(f"the room's upkeep: not measured ({r['upkeep_failure']})")
    sys.stdout.flush()


def overhead_rows(args):
    """The echo server as built, with the watchdog and the recorder off
    (the counters stay: they are plain integers and cannot be turned
    off), and, with --base DIR, the echo of another build."""
    ex = args.examples
    rows = [("evloop", [f"{ex}/echo", "--tcp", "127.0.0.1:0"]),
            ("evloop_counters_only", [f"{ex}/echo", "--tcp", "127.0.0.1:0", "--slow-callback", "0",
                                      "--trace-events", "0"])]
    if args.base:
        rows.append(("evloop_base", [f"{os.path.abspath(args.base)}/echo", "--tcp", "127.0.0.1:0"]))
    rows += [(name, [*cmd.split(), "--tcp", "127.0.0.1:0"]) for name, cmd in args.server]
    return [(name, argv) for name, argv in rows if selected(args, name)]


def median(values):
    values = sorted(values)
    if not values:
        return None
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def print_rounds(title, rows, key, unit, refs, spec=".3f"):
    """One table of `key` over rounds: median, min, max per row, and the
    median's ratio over each row named in `refs`."""
    results = {name: [r[key] for r in runs if r.get("ok") and r.get(key) is not None]
               for name, runs in rows.items()}
    meds = {name: median(v) for name, v in results.items()}
    refs = [r for r in refs if meds.get(r)]
    head = ["server", f"median {unit}", "min", "max", "rounds", *(f"vs {r}" for r in refs)]
    body = []
    for name, values in results.items():
        ratios = [fmt(meds[name] / meds[r], ".3f") if meds[name] else "-" for r in refs]
        body.append([name, fmt(meds[name], spec), fmt(min(values, default=None), spec),
                     fmt(max(values, default=None), spec), str(len(values)), *ratios])
    print_markdown(title, head, body)
    print("\n(lower is better)")
    sys.stdout.flush()


def print_paired(rows, key, refs):
    """Each row over each reference row within the same round (the rows of
    a round run back to back, so the machine's drift between rounds
    cancels): the median of those ratios and its spread."""
    for ref in refs:
        for name, runs in rows.items():
            if name == ref or ref not in rows:
                continue
            ratios = sorted(a[key] / b[key] for a, b in zip(runs, rows[ref])
                            if a.get("ok") and b.get("ok") and a.get(key) and b.get(key))
            if not ratios:
                continue
            mean = sum(ratios) / len(ratios)
            spread = (sum((r - mean) ** 2 for r in ratios) / max(len(ratios) - 1, 1)) ** 0.5
            print(f"{name} ÷ {ref}, round by round: median {median(ratios):.3f}, mean {mean:.3f} "
                  f"± {spread / len(ratios) ** 0.5:.3f} (standard error, {len(ratios)} rounds)")
    sys.stdout.flush()


def http_get(sock, path):
    """One GET on a keep-alive connection; the body's length."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("admin closed")
        buf += chunk
    head, body = buf.split(b"\r\n\r\n", 1)
    length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                  if line.lower().startswith(b"content-length:"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("admin closed")
        body += chunk
    return body


def scrape_times(args, record, conns):
    """Times /metrics and /stats on an echo server that holds `conns`
    idle connections (loadgen idle, held open meanwhile)."""
    scrapes = 20 if args.quick else 200
    server = Server("evloop", [f"{args.examples}/echo", "--tcp", "127.0.0.1:0", "--admin", "127.0.0.1:0"],
                    ["tcp", "admin"])
    failure = server.start()
    result = {"row": "evloop", "scenario": "overhead", "table": f"scrape at {conns} conns", "conns": conns}
    if failure:
        result.update(ok=False, failure=failure)
        record(result)
        return result
    hold = 30
    load = subprocess.Popen(["taskset", "-c", CLIENT_CPU, LOADGEN, "idle", "--tcp", server.addrs["tcp"],
                             "--conns", str(conns), "--hold", str(hold), "--pid", str(server.proc.pid)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        host, port = server.addrs["admin"].rsplit(":", 1)
        sock = socket.create_connection((host, int(port)), timeout=10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        deadline = time.monotonic() + hold / 2
        open_now = 0
        while time.monotonic() < deadline:
            body = http_get(sock, "/metrics").decode()
            open_now = sum(int(float(line.rsplit(" ", 1)[1])) for line in body.splitlines()
                           if line.startswith("evloop_connections_open{"))
            if open_now >= conns + 1:
                break
            time.sleep(0.05)
        if open_now < conns + 1:
            result.update(ok=False, failure=f"{open_now} connections open, not {conns + 1}")
        else:
            skip = {server.proc.pid, load.pid, os.getpid()}
            before, t0 = process_ticks(), time.monotonic()
            for path, name in (("/metrics", "metrics"), ("/stats", "stats")):
                took, size = [], 0
                for _ in range(scrapes):
                    t0 = time.perf_counter()
                    size = len(http_get(sock, path))
                    took.append((time.perf_counter() - t0) * 1e3)
                took.sort()
                result.update({f"{name}_p50_ms": took[len(took) // 2],
                               f"{name}_p99_ms": took[min(len(took) - 1, int(len(took) * 0.99))],
                               f"{name}_max_ms": took[-1], f"{name}_bytes": size})
            after, t1 = process_ticks(), time.monotonic()
            ticks = sum(n - before.get(pid, 0) for pid, n in after.items() if pid not in skip)
            result["other_procs_cpu"] = round(ticks / os.sysconf("SC_CLK_TCK") / max(t1 - t0, 1e-3), 3)
            result["ok"] = True
        sock.close()
    finally:
        load.kill()
        load.communicate()
        server.stop()
    record(result)
    return result


def scenario_overhead(args, record):
    """What seeing inside the loop costs: echo paced at 50,000 req/s and
    idle connections, the server as built (counters, watchdog, recorder)
    beside the same build with the watchdog and recorder off and, with
    --base DIR, a build from before the counters; rounds alternate the
    rows, and each table gives medians. Then /metrics and /stats timed
    against 10,000 connections."""
    warmup = 0.2 if args.quick else 1
    duration = args.duration or (1 if args.quick else 5)
    rounds = args.rounds or (1 if args.quick else 10)
    rate = 5000 if args.quick else 50000
    conns = args.conns or (1000 if args.quick else 10000)
    rows = overhead_rows(args)
    refs = ["evloop_counters_only", "evloop_base"]
    paced = {name: [] for name, _ in rows}
    idle = {name: [] for name, _ in rows}
    title = f"echo 64 B, 100 conns, paced at {rate:,} req/s: server CPU per request"
    for n in range(rounds):
        # Each round starts from a different row, so that no row always
        # runs first (or last) after a pause.
        order = rows[n % len(rows):] + rows[:n % len(rows)]
        for name, argv in order:
            def load(addrs, pids):
                return ["echo", "--tcp", addrs["tcp"], "--conns", "100", "--size", "64", "--depth", "1",
                        "--duration", str(duration), "--warmup", str(warmup), "--rate", str(rate),
                        "--pid", pids]
            paced[name].append(measure(args, "overhead", title, Server(name, argv, ["tcp"]), load, record,
                                       timeout=duration + 60))
    print_rounds(title, paced, "server_us_per_req", "µs/req", refs)
    print_paired(paced, "server_us_per_req", refs)
    idle_rounds = 1 if args.quick else 3
    for n in range(idle_rounds):
        order = rows[n % len(rows):] + rows[:n % len(rows)]
        for name, argv in order:
            idle[name].append(measure(args, "overhead", f"{conns} idle conns", Server(name, argv, ["tcp"]),
                                      lambda addrs, pids: ["idle", "--tcp", addrs["tcp"], "--conns",
                                                           str(conns), "--hold", "1" if args.quick else "2",
                                                           "--pid", pids],
                                      record, timeout=120))
    print_rounds(f"{conns} idle conns: server bytes per connection", idle, "bytes_per_conn", "B/conn", refs, ",")
    if selected(args, "evloop"):
        r = scrape_times(args, record, conns)
        if r.get("ok"):
            print_markdown(f"admin port at {conns} idle connections",
                           ["path", "p50 ms", "p99 ms", "max ms", "bytes"],
                           [[f"/{name}", f"{r[name + '_p50_ms']:.2f}", f"{r[name + '_p99_ms']:.2f}",
                             f"{r[name + '_max_ms']:.2f}", f"{r[name + '_bytes']:,}"]
                            for name in ("metrics", "stats")])
            print(f"\nother procs meanwhile: {r['other_procs_cpu']:.3f} cores")
            sys.stdout.flush()


SCENARIOS = {"echo": scenario_echo, "idle": scenario_idle, "files": scenario_files, "chat": scenario_chat,
             "shards": scenario_shards, "tls": scenario_tls, "proxy": scenario_proxy,
             "overhead": scenario_overhead, "redis_chat": scenario_redis_chat}


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("scenario", choices=sorted(SCENARIOS))
    parser.add_argument("--duration", type=float, help="measured seconds per row (default 5; --quick 1)")
    parser.add_argument("--conns", type=int, help="idle, tls, overhead: idle connections (default 10000); "
                        "shards: of the closed-loop echo (default 1000)")
    parser.add_argument("--requests", type=int, help="proxy: redis-benchmark -n, requests per test "
                        "(default 100000; --quick 10000)")
    parser.add_argument("--rows", type=lambda s: s.split(","), help="only these rows, comma-separated")
    parser.add_argument("--rounds", type=int, help="overhead: rounds of the paced table (default 10; --quick 1)")
    parser.add_argument("--base", metavar="DIR", help="overhead: the examples of another build, one more row")
    parser.add_argument("--examples", default=os.path.join(ROOT, "target", "release", "examples"),
                        help="the evloop build whose examples are measured")
    parser.add_argument("--server", action="append", default=[], type=lambda s: s.split("=", 1),
                        metavar="NAME=CMD", help="one more row")
    parser.add_argument("--data", default=os.environ.get("BENCH_DATA", os.path.join(WORK, "data")),
                        help="files, tls: where big.bin and small.bin live")
    parser.add_argument("--quick", action="store_true", help="short windows, small loads: a smoke run")
    parser.add_argument("--no-build", action="store_true")
    parser.add_argument("--no-install", action="store_true")
    parser.add_argument("--no-perf", dest="perf", action="store_false", help="no sys/req column")
    parser.add_argument("--quiet-limit", type=float, default=60.0,
                        help="longest wait for a quiet machine before a row (s)")
    args = parser.parse_args()
    if any(len(s) != 2 for s in args.server):
        parser.error("--server takes NAME=CMD")
    if (os.cpu_count() or 1) < 2:
        sys.exit("run.py: needs 2 cores (server on CPU 0, load on CPU 1)")
    if args.quick:
        args.quiet_limit = min(args.quiet_limit, 5.0)

    build(args, args.scenario)
    results = os.path.join(WORK, "results")
    os.makedirs(results, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    path = os.path.join(results, f"{args.scenario}-{stamp}.jsonl")
    failures = []

    def record(result):
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(result) + "\n")
        if not result.get("ok"):
            failures.append(f"{result['table']}: {result['row']}: {result.get('failure', 'a check failed')}")
        log(f"run.py: {result['table']}: {result['row']}: {'ok' if result.get('ok') else 'FAILED'}")

    SCENARIOS[args.scenario](args, record)
    print(f"\nraw results: {os.path.relpath(path, ROOT)}")
    if failures:
        print("\nfailed rows:\n" + "\n".join("- " + f for f in failures))
        sys.exit(1)


if __name__ == "__main__":
    main()
