#!/usr/bin/env python3
"""Echo server on asyncio's Protocol API, the echo example of Python's docs:
data_received writes the bytes straight back through the transport.

    py_asyncio_echo.py ADDR

ADDR is like 127.0.0.1:0 or [::1]:0. Prints `listening tcp ADDR` with the
bound address; SIGTERM or SIGINT makes it exit 0. Standard library only, on
the default event loop (no uvloop): what a Python user has at hand.
"""

import asyncio
import ipaddress
import os
import signal
import sys

PROGRAM = "py_asyncio_echo"


class Echo(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport

    def data_received(self, data):
        self.transport.write(data)

    def eof_received(self):
        # Returning a false value closes the transport once what is
        # buffered has been written.
        return False

    # Flow control, a few lines the docs' example leaves out: while the
    # transport's write buffer is over its high-water mark, stop reading,
    # so that a client that does not read cannot make it grow for ever.
    def pause_writing(self):
        self.transport.pause_reading()

    def resume_writing(self):
        self.transport.resume_reading()


def parse_addr(text):
    """Splits 127.0.0.1:PORT or [::1]:PORT into (host, port), or None."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or int(port) > 65535:
        return None
    bracketed = host.startswith("[") and host.endswith("]")
    if bracketed:
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return None
    if (ip.version == 6) != bracketed:
        return None
    return host, int(port)


def usage(message):
    print(f"{PROGRAM}: {message} (usage: py_asyncio_echo.py ADDR)", file=sys.stderr)
    sys.exit(2)


async def main(host, port, text):
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    # Signals are caught from before the announce line on.
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        # The backlog of tokio's listeners (the default, 100, drops SYNs
        # when a load generator opens many connections at once).
        server = await loop.create_server(Echo, host, port, backlog=1024)
    except OSError as err:
        reason = os.strerror(err.errno) if err.errno else err
        print(f"{PROGRAM}: cannot bind {text}: {reason}", file=sys.stderr)
        sys.exit(1)
    for sock in server.sockets:
        addr = sock.getsockname()
        shown = f"[{addr[0]}]" if sock.family.name == "AF_INET6" else addr[0]
        print(f"listening tcp {shown}:{addr[1]}", flush=True)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    args = sys.argv[1:]
    if args in (["--help"], ["-h"]):
        print("usage: py_asyncio_echo.py ADDR")
        sys.exit(0)
    if len(args) != 1 or args[0].startswith("-"):
        usage("give exactly one address")
    parsed = parse_addr(args[0])
    if parsed is None:
        usage(f"'{args[0]}' is not an address like 127.0.0.1:0 or [::1]:0")
    asyncio.run(main(*parsed, args[0]))
