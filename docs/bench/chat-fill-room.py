#!/usr/bin/env python3
# chat-fill-room.py: 50 empty datagrams from 50 ports at a --max-clients 50 room,
# then as many TCP members as will be let in. Usage: chat-fill-room.py CHAT_BINARY
import socket, subprocess, sys
p = subprocess.Popen([sys.argv[1], "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0",
                      "--max-clients", "50"], stdout=subprocess.PIPE,
                     stderr=subprocess.DEVNULL, text=True)
addrs = {}
for _ in range(2):
    kind, addr = p.stdout.readline().split()[1:3]
    h, port = addr.rsplit(":", 1); addrs[kind] = (h, int(port))
strangers = []
for _ in range(50):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("127.0.0.1", 0))
    s.settimeout(5); s.sendto(b"", addrs["udp"]); strangers.append(s)
welcomed = sum(1 for s in strangers if s.recv(2048).startswith(b"* welcome"))
joined = 0
members = []
for _ in range(50):
    t = socket.create_connection(addrs["tcp"]); t.settimeout(5)
    line = t.makefile("rb").readline()
    if not line.startswith(b"* welcome"):
        break
    members.append(t); joined += 1
print(f"strangers welcomed: {welcomed}/50; TCP members then admitted: {joined}")
p.terminate(); p.wait()
