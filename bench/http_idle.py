#!/usr/bin/env python3
"""Memory per idle keep-alive HTTP client connection (issue 15): opens
--conns connections to 127.0.0.1:PORT, each after one completed request
(`GET PATH`, so every one is a real keep-alive connection the proxy has
served), holds them --settle seconds, checks the first and the last still
answer, and prints one JSON line:

- user memory: the proxy's VmRSS and Private_Dirty (its process and every
  descendant: nginx's workers) after minus before, per connection;
- kernel memory: the slab objects in use (/proc/slabinfo, root only:
  active objects x object size summed over every cache, so that free room
  left in slabs by an earlier test does not hide new objects), TCP socket
  memory (/proc/net/sockstat `TCP ... mem`, pages) and unreclaimable slab
  pages (/proc/meminfo SUnreclaim), after minus before, per connection.
  All count the whole machine: the client's and the backend's sockets too,
  so compare a proxy with `direct` (no proxy) measured the same way; run on
  a quiet machine.

    bench/http_idle.py --port PORT [--pid PROXY_PID] [--conns 10000] [--settle 2] [--path /64.bin]

Standard library only; 127.0.0.1 only; it starts no process.
"""

import argparse
import json
import os
import resource
import socket
import time


def tree(pid):
    """pid and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in os.listdir(f"/proc/{p}/task"):
            try:
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
            except OSError:
                pass
    return out


def user_kib(pid):
    """(VmRSS, Private_Dirty) in KiB over the process tree."""
    rss = dirty = 0
    if pid is None:
        return 0, 0
    for p in tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                rss += sum(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            with open(f"/proc/{p}/smaps_rollup") as f:
                dirty += sum(int(line.split()[1]) for line in f if line.startswith("Private_Dirty:"))
        except OSError:
            pass
    return rss, dirty


def kernel_kib():
    """(TCP socket memory, SUnreclaim) in KiB, machine-wide."""
    tcp = 0
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                words = line.split()
                tcp = int(words[words.index("mem") + 1]) * os.sysconf("SC_PAGE_SIZE") // 1024
    with open("/proc/meminfo") as f:
        slab = next(int(line.split()[1]) for line in f if line.startswith("SUnreclaim:"))
    return tcp, slab


def slab_objects():
    """{cache: bytes of its objects in use} from /proc/slabinfo ({} if unreadable)."""
    out = {}
    try:
        with open("/proc/slabinfo") as f:
            for line in f.readlines()[2:]:
                w = line.split()
                out[w[0]] = int(w[1]) * int(w[3])
    except (OSError, IndexError, ValueError):
        return {}
    return out


def slab_delta(before, after, n):
    """(KiB per connection over every cache, the five caches that grew most)."""
    grew = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
    top = sorted(grew.items(), key=lambda kv: -kv[1])[:5]
    return (round(sum(grew.values()) / 1024 / n, 2),
            {k: round(v / 1024 / n, 3) for k, v in top})


def request(sock, path):
    """One GET and its whole response (Content-Length framed); True if 200."""
    sock.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\n\r\n".encode())
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            return False
        body += chunk
    return head.split(b" ")[1] == b"200"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--pid", type=int)
    ap.add_argument("--conns", type=int, default=10000)
    ap.add_argument("--settle", type=float, default=2)
    ap.add_argument("--path", default="/64.bin")
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    time.sleep(0.5)
    user0, kern0, slab0 = user_kib(args.pid), kernel_kib(), slab_objects()
    socks, error = [], None
    t0 = time.monotonic()
    try:
        for _ in range(args.conns):
            s = socket.create_connection(("127.0.0.1", args.port), timeout=10)
            socks.append(s)
            if not request(s, args.path):
                error = f"connection {len(socks)}: no 200"
                break
    except OSError as e:
        error = f"after {len(socks)} connections: {e}"
    opened = time.monotonic() - t0
    time.sleep(args.settle)
    user1, kern1, slab1 = user_kib(args.pid), kernel_kib(), slab_objects()
    try:
        alive = bool(socks) and all(request(s, args.path) for s in (socks[0], socks[-1]))
    except OSError:
        alive = False
    for s in socks:
        s.close()
    n = max(len(socks), 1)
    per = lambda a, b: round((b - a) / n, 2)  # noqa: E731
    objects, top = slab_delta(slab0, slab1, n) if slab0 and slab1 else (None, {})
    out = {
        "connections": len(socks), "open_seconds": round(opened, 2), "settle_s": args.settle,
        "alive_after_hold": alive,
        "proxy_rss_kib_per_conn": per(user0[0], user1[0]),
        "proxy_private_dirty_kib_per_conn": per(user0[1], user1[1]),
        "kernel_slab_objects_kib_per_conn": objects,
        "kernel_slab_top_caches_kib_per_conn": top,
        "tcp_mem_kib_per_conn": per(kern0[0], kern1[0]),
        "slab_unreclaimable_kib_per_conn": per(kern0[1], kern1[1]),
        "before": {"rss_kib": user0[0], "private_dirty_kib": user0[1], "tcp_mem_kib": kern0[0], "slab_kib": kern0[1]},
        "after": {"rss_kib": user1[0], "private_dirty_kib": user1[1], "tcp_mem_kib": kern1[0], "slab_kib": kern1[1]},
    }
    if error or len(socks) < args.conns or not alive:
        out["error"] = error or ("a held connection no longer answers" if not alive else "fewer connections")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
