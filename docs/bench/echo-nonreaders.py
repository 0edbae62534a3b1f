#!/usr/bin/env python3
# echo-nonreaders.py: 200 clients that send to echo and never read; the
# server's RSS growth once none of them can push another byte.
# Usage: echo-nonreaders.py ECHO_BINARY. Loopback only, bounded in time.
import socket, subprocess, sys, time

def rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS:"))

p = subprocess.Popen([sys.argv[1], "--tcp", "127.0.0.1:0"], stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
host, port = p.stdout.readline().split()[2].rsplit(":", 1)
base = rss_kib(p.pid)
clients = []
for _ in range(200):
    s = socket.create_connection((host, int(port)))
    s.setblocking(False)
    clients.append(s)
chunk = b"e" * 65536
quiet, deadline = 0, time.time() + 60
while quiet < 5 and time.time() < deadline:
    taken = 0
    for s in clients:
        while True:
            try:
                taken += s.send(chunk)
            except BlockingIOError:
                break
    quiet = quiet + 1 if taken == 0 else 0
    time.sleep(0.05)
grown = rss_kib(p.pid) - base
print(f"200 clients that send and never read: +{grown / 1024:.1f} MB ({grown / 200:.0f} KiB each)")
p.terminate(); p.wait()
