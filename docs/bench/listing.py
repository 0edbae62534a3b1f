#!/usr/bin/env python3
# listing.py: what a big directory listing costs other clients and the server.
# Usage: listing.py FILE_SERVER_BINARY
#  1. p50/p99 of a small GET (2,000 of them or 60 s, one keep-alive connection), alone
#     and while 1, then 4, clients pull a 20,000-entry listing in a loop;
#  2. the server's RSS with 100 clients that ask for a listing of about 7 MB
#     and never read, and again after they have left (reset); three rounds,
#     to tell memory the allocator keeps for reuse from memory that grows.
# `other cpu`: what the rest of the machine used meanwhile, in cores (the
# pullers are threads of this script, so they count as its own); above 0.2,
# other work competed with the run: rerun it.
# Loopback only; every loop is bounded in count and time.
import os, shutil, socket, subprocess, sys, tempfile, threading, time

def start(binary, root):
    p = subprocess.Popen([binary, "--tcp", "127.0.0.1:0", "--http", "127.0.0.1:0",
                          "--root", root], stdout=subprocess.PIPE,
                         stderr=subprocess.DEVNULL, text=True)
    addrs = {}
    for _ in range(2):
        kind, addr = p.stdout.readline().split()[1:3]
        host, port = addr.rsplit(":", 1)
        addrs[kind] = (host, int(port))
    return p, addrs["http"]

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0

def busy_ticks():
    """Clock ticks the whole machine spent busy so far (/proc/stat)."""
    with open("/proc/stat") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    return sum(fields) - fields[3] - fields[4]   # all but idle and iowait

def proc_ticks(pid):
    """Clock ticks (user + system) of process `pid` so far."""
    with open(f"/proc/{pid}/stat") as f:
        rest = f.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])

def other_cpu(start, pid, window):
    """Cores' worth of CPU used by anything but the server and this script
    over `window` seconds since `start` (busy, server, self ticks); more than
    0.2 means other work competed with the run."""
    hz = os.sysconf("SC_CLK_TCK")
    busy, server, own = busy_ticks(), proc_ticks(pid), proc_ticks(os.getpid())
    other = (busy - start[0]) - (server - start[1]) - (own - start[2])
    return other / hz / window

def fd_count(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))

def read_response(f):
    """Reads one response off a buffered socket file; returns the body size."""
    f.readline()
    chunked, length = False, 0
    while True:
        line = f.readline()
        if line in (b"\r\n", b""):
            break
        name, _, value = line.decode().partition(":")
        if name.lower() == "transfer-encoding" and "chunked" in value:
            chunked = True
        if name.lower() == "content-length":
            length = int(value)
    if not chunked:
        return len(f.read(length))
    total = 0
    while True:
        size = int(f.readline(), 16)
        f.read(size + 2)
        total += size
        if size == 0:
            return total

def small_gets(addr, n):
    s = socket.create_connection(addr)
    f = s.makefile("rb")
    times = []
    deadline = time.time() + 60
    while len(times) < n and time.time() < deadline:
        t = time.perf_counter()
        s.sendall(b"GET /small.txt HTTP/1.1\r\nHost: t\r\n\r\n")
        read_response(f)
        times.append(time.perf_counter() - t)
    s.close()
    times.sort()
    n = len(times)
    return times[n // 2] * 1000, times[max(n * 99 // 100 - 1, 0)] * 1000

def puller(addr, stop, pulls):
    s = socket.create_connection(addr)
    f = s.makefile("rb")
    deadline = time.time() + 120
    while not stop.is_set() and time.time() < deadline:
        s.sendall(b"GET /big/ HTTP/1.1\r\nHost: t\r\n\r\n")
        pulls.append(read_response(f))
    s.close()

def stalled_round(p, addr, base, fds, round):
    stalled = []
    for _ in range(100):
        s = socket.create_connection(addr)
        s.sendall(b"GET /long/ HTTP/1.1\r\nHost: t\r\n\r\n")
        stalled.append(s)
    for s in stalled:
        s.recv(1)
    last, still, deadline = -1, 0, time.time() + 60
    while still < 5 and time.time() < deadline:
        time.sleep(0.1)
        now = rss_kib(p.pid)
        still = still + 1 if now == last else 0
        last = now
    held = rss_kib(p.pid) - base
    for s in stalled:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    deadline = time.time() + 10
    while fd_count(p.pid) > fds and time.time() < deadline:
        time.sleep(0.05)
    after = rss_kib(p.pid) - base
    print(f"round {round}: 100 clients that never read a listing of about 7 MB: "
          f"+{held / 1024:.1f} MB ({held / 100:.0f} KiB each); after they left: +{after / 1024:.1f} MB")

def main():
    binary = sys.argv[1]
    root = tempfile.mkdtemp(prefix="evloop-listing-")
    try:
        os.makedirs(f"{root}/big")
        os.makedirs(f"{root}/long")
        for i in range(20000):
            open(f"{root}/big/file-{i:05d}.txt", "w").write("x" * (i % 100))
            open(f"{root}/long/{'n' * 120}{i:05d}", "w").write("x")
        open(f"{root}/small.txt", "w").write("small")
        p, addr = start(binary, root)
        ticks, t0 = (busy_ticks(), proc_ticks(p.pid), proc_ticks(os.getpid())), time.time()
        p50, p99 = small_gets(addr, 2000)
        other = other_cpu(ticks, p.pid, time.time() - t0)
        print(f"small GET alone: p50 {p50:.2f} ms, p99 {p99:.2f} ms (other cpu {other:.2f})")
        for pullers in (1, 4):
            stop, pulls = threading.Event(), []
            threads = [threading.Thread(target=puller, args=(addr, stop, pulls))
                       for _ in range(pullers)]
            for t in threads:
                t.start()
            while not pulls:
                time.sleep(0.01)
            ticks, t0 = (busy_ticks(), proc_ticks(p.pid), proc_ticks(os.getpid())), time.time()
            p50, p99 = small_gets(addr, 2000)
            other = other_cpu(ticks, p.pid, time.time() - t0)
            stop.set()
            for t in threads:
                t.join()
            print(f"small GET while {pullers} client(s) pull a 20,000-entry listing "
                  f"({pulls[0]:,} bytes) in a loop: p50 {p50:.2f} ms, p99 {p99:.2f} ms "
                  f"({len(pulls)} pulls, other cpu {other:.2f})")

        fds = fd_count(p.pid)
        base = rss_kib(p.pid)
        for round in (1, 2, 3):
            stalled_round(p, addr, base, fds, round)
        p.terminate()
        p.wait()
    finally:
        shutil.rmtree(root, ignore_errors=True)

main()
