#!/usr/bin/env python3
"""Kernel memory ringway's sockets and pipes hold for clients that never
read while their upstream keeps sending (issue 9). Standard library and
`ss` (iproute2) only; 127.0.0.1 only.

    bench/stalled_mem.py RINGWAY_BIN [--conns 100] [--settle 8] [ringway flags...]

A backend (threads of this script) writes to every connection as fast as it
can; the clients connect through ringway (one worker) and never read. After
--settle seconds it sums, from `ss -tmn`, the receive queue memory (skmem
r) and the send queue memory (skmem w) of ringway's downstream sockets (local
port = its listener) and upstream sockets (remote port = the backend), and
counts ringway's pipe descriptors (each pipe holds at most its capacity,
1 MiB by default). Prints one JSON line. Every process it starts is stopped
by PID.
"""

import argparse
import json
import os
import re
import socket
import subprocess
import threading
import time

from oneproxy import free_port, start, stop


def pour(conn, stop):
    chunk = b"x" * 65536
    try:
        while not stop.is_set():
            conn.sendall(chunk)
    except OSError:
        pass


def serve(listener, conns, stop):
    while not stop.is_set():
        try:
            conn, _ = listener.accept()
        except OSError:
            return
        conns.append(conn)
        threading.Thread(target=pour, args=(conn, stop), daemon=True).start()


def skmem(listen, backend):
    """(recv-queue bytes, send-queue bytes) of ringway's sockets, each side."""
    out = subprocess.run(["ss", "-tmnH", "state", "established"],
                         capture_output=True, text=True, check=True).stdout
    totals = {"downstream": [0, 0], "upstream": [0, 0]}
    lines = out.splitlines()
    for i, line in enumerate(lines):
        f = line.split()
        if len(f) < 4 or i + 1 >= len(lines):
            continue
        local, peer = f[2], f[3]
        side = None
        if local.endswith(f":{listen}"):
            side = "downstream"
        elif peer.endswith(f":{backend}"):
            side = "upstream"
        if side is None:
            continue
        m = re.search(r"skmem:\(r(\d+),rb\d+,t\d+,tb\d+,f\d+,w(\d+)", lines[i + 1])
        if m:
            totals[side][0] += int(m.group(1))
            totals[side][1] += int(m.group(2))
    return totals


def pipes(pid):
    n = 0
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                n += 1
        except OSError:
            pass
    return n // 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ringway")
    ap.add_argument("--conns", type=int, default=100)
    ap.add_argument("--settle", type=float, default=8)
    args, extra = ap.parse_known_args()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1024)
    backend = listener.getsockname()[1]
    conns, done = [], threading.Event()
    threading.Thread(target=serve, args=(listener, conns, done), daemon=True).start()

    listen = free_port()
    proxy, _work, probe = start(args.ringway, listen, backend, extra)
    clients = []
    try:
        clients.append(probe)
        for _ in range(args.conns - 1):
            clients.append(socket.create_connection(("127.0.0.1", listen), timeout=10))
        time.sleep(args.settle)
        mem = skmem(listen, backend)
        held = pipes(proxy.pid)
        sysctl = {}
        for name in ("tcp_rmem", "tcp_wmem"):
            with open(f"/proc/sys/net/ipv4/{name}") as f:
                sysctl[name] = f.read().split()
        total = sum(sum(v) for v in mem.values())
        print(json.dumps({
            "connections": len(clients),
            "flags": extra,
            "downstream_recvq_sendq": mem["downstream"],
            "upstream_recvq_sendq": mem["upstream"],
            "socket_bytes": total,
            "socket_kib_per_conn": round(total / 1024 / len(clients), 1),
            "pipes_held": held,
            **sysctl,
            "kernel": os.uname().release,
        }))
    finally:
        stop(proxy)
        done.set()
        for s in clients + conns:
            s.close()
        listener.close()


if __name__ == "__main__":
    main()
