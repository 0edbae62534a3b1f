#!/usr/bin/env python3
# chat-spoof-who.py: bytes a chat server sends to an address that sent it
# "/who" datagram(s) and nothing else (as a spoofed source would), in a room
# of N TCP members who then each say one line.
# Usage: chat-spoof-who.py CHAT_BINARY N [DATAGRAMS]  (DATAGRAMS default 1)
import socket, subprocess, sys, time
binary, n = sys.argv[1], int(sys.argv[2])
p = subprocess.Popen([binary, "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"],
                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addrs = {}
for _ in range(2):
    kind, addr = p.stdout.readline().split()[1:3]
    addrs[kind] = addr
def sa(a):
    h, port = a.rsplit(":", 1); return (h, int(port))
members = []
for _ in range(n):
    s = socket.create_connection(sa(addrs["tcp"])); s.settimeout(5)
    members.append(s)
time.sleep(0.3)
victim = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); victim.bind(("127.0.0.1", 0))
for _ in range(int(sys.argv[3]) if len(sys.argv) > 3 else 1):
    victim.sendto(b"/who", sa(addrs["udp"]))
time.sleep(0.3)
for m in members:
    m.sendall(b"hello\n")
time.sleep(1.0)
victim.setblocking(False)
total = count = 0
while True:
    try:
        d = victim.recv(65536); total += len(d); count += 1
    except BlockingIOError:
        break
print(f"members={n} request=4 bytes -> {count} datagrams, {total} bytes returned")
p.terminate(); p.wait()
