#!/usr/bin/env python3
"""What a paused pair costs the proxy: an upstream that never reads, a
client that writes until its writes block, then 3 s of `perf stat` on the
proxy (epoll_wait calls, all system calls, context switches) and its
resident memory.

    cargo build --release --example proxy
    python3 docs/bench/proxy-paused.py

Everything is on 127.0.0.1; the proxy is started here and stopped by its
PID. Needs `perf` (linux-perf); perf prints `<not counted>` for a process
that was never scheduled in the window.
"""

import os
import signal
import socket
import subprocess
import sys
import time

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
PROXY = os.path.join(ROOT, "target", "release", "examples", "proxy")


def main():
    upstream = socket.socket()
    upstream.bind(("127.0.0.1", 0))
    upstream.listen(1)
    up_host, up_port = upstream.getsockname()
    proxy = subprocess.Popen([PROXY, "--upstream", f"{up_host}:{up_port}", "--tcp", "127.0.0.1:0"],
                             stdout=subprocess.PIPE)
    try:
        words = proxy.stdout.readline().decode().split()
        host, port = words[2].rsplit(":", 1)
        client = socket.create_connection((host, int(port)))
        held, _ = upstream.accept()  # accepted, never read
        client.setblocking(False)
        sent, blocked_since = 0, None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                sent += client.send(b"x" * 65536)
                blocked_since = None
            except BlockingIOError:
                blocked_since = blocked_since or time.monotonic()
                if time.monotonic() - blocked_since > 0.5:
                    break
                time.sleep(0.05)
        print(f"client blocked after {sent:,} bytes", file=sys.stderr)
        stat = subprocess.run(["perf", "stat", "-x", ",", "-e",
                               "syscalls:sys_enter_epoll_wait,raw_syscalls:sys_enter,context-switches",
                               "-p", str(proxy.pid), "--", "sleep", "3"],
                              capture_output=True, text=True)
        with open(f"/proc/{proxy.pid}/status") as status:
            rss = next(line.split()[1] for line in status if line.startswith("VmRSS:"))
        print("| event, over 3 s | count |")
        print("|---|---|")
        for line in stat.stderr.strip().splitlines():
            fields = line.split(",")
            if len(fields) > 2:
                print(f"| {fields[2]} | {fields[0]} |")
        print(f"\nproxy resident: {int(rss):,} KiB; client blocked after {sent:,} bytes")
        client.close()
        held.close()
    finally:
        proxy.send_signal(signal.SIGTERM)
        try:
            proxy.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proxy.kill()
            proxy.wait()
        upstream.close()


if __name__ == "__main__":
    main()
