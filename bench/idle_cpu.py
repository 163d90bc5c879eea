#!/usr/bin/env python3
"""CPU a ringway spends while holding idle connections (issue 9: the 100 ms
tick used to scan every slot). Standard library only; 127.0.0.1 only.

    bench/idle_cpu.py RINGWAY_BIN [--conns 9000] [--seconds 20]

Starts a backend that accepts and holds connections (a thread of this
script), ringway with one worker in front of it, opens --conns connections
through ringway, waits until the backend holds them all, then reads
ringway's utime+stime (/proc/PID/stat) over --seconds and prints one JSON
line. Every process it starts is stopped by PID.
"""

import argparse
import json
import os
import selectors
import socket
import threading
import time

from oneproxy import free_port, start, stop



def hold(listener, held, stop):
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    while not stop.is_set():
        for _ in sel.select(timeout=0.2):
            try:
                conn, _ = listener.accept()
            except BlockingIOError:
                continue
            held.append(conn)


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("ringway")
    ap.add_argument("--conns", type=int, default=9000)
    ap.add_argument("--seconds", type=float, default=20)
    args = ap.parse_args()

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    listener.setblocking(False)
    held, done = [], threading.Event()
    threading.Thread(target=hold, args=(listener, held, done), daemon=True).start()

    listen = free_port()
    proxy, _work, probe = start(args.ringway, listen, listener.getsockname()[1],
                                ["--max-connections", str(args.conns + 100)])
    clients = []
    try:
        probe.close()
        deadline = time.time() + 60
        while len(held) < 1:
            time.sleep(0.01)
        held.pop().close()  # the probe's upstream side
        for _ in range(args.conns):
            clients.append(socket.create_connection(("127.0.0.1", listen), timeout=10))
        while len(held) < args.conns and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1)
        before = cpu_seconds(proxy.pid)
        time.sleep(args.seconds)
        used = cpu_seconds(proxy.pid) - before
        print(json.dumps({
            "connections": len(held),
            "seconds": args.seconds,
            "cpu_s": round(used, 3),
            "core_pct": round(100 * used / args.seconds, 2),
            "kernel": os.uname().release,
            "cpus": os.cpu_count(),
        }))
    finally:
        stop(proxy)
        done.set()
        for s in clients + held:
            s.close()


if __name__ == "__main__":
    main()
