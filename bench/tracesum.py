#!/usr/bin/env python3
"""tracesum.py PERF.DATA BYTES: from a tracepoint recording of the proxy
(profile.sh TRACE=1): per GB forwarded, splice(2) calls split by direction
guess (fd_out is a pipe write end -> socket->pipe "in"; else "out"), their
byte sizes (histogram), EAGAIN results, io_uring_enter/epoll_wait calls and
context switches away from the proxy."""
import collections, re, subprocess, sys
data, nbytes = sys.argv[1], int(sys.argv[2])
gb = nbytes / 1e9
out = subprocess.run(["perf", "script", "-i", data, "-F", "tid,event,trace"], capture_output=True, text=True).stdout
cnt = collections.Counter(); sizes = {"in": collections.Counter(), "out": collections.Counter()}
pending = {}
pipes_w = set()
def bucket(n):
    for b in (4096, 16384, 65536, 131072, 262144, 524288, 1048576):
        if n <= b: return b
    return 1 << 30
for line in out.splitlines():
    m = re.match(r"\s*(\d+)\s+(\S+):\s*(.*)", line)
    if not m: continue
    tid, ev, tr = m.groups()
    if ev.endswith("sys_enter_splice"):
        f = dict(re.findall(r"(\w+): (0x[0-9a-f]+)", tr))
        fd_in, fd_out = int(f.get("fd_in", "0"), 16), int(f.get("fd_out", "0"), 16)
        pending[tid] = (fd_in, fd_out)
    elif ev.endswith("sys_exit_splice"):
        r = int(re.search(r"0x[0-9a-f]+", tr).group(0), 16)
        if r >= 1 << 63: r -= 1 << 64
        fds = pending.pop(tid, (0, 0))
        cnt["splice"] += 1
        # heuristic: ringway and HAProxy both splice socket->pipe then pipe->socket;
        # the "in" call's fd_in is the socket; record by (fd_in) parity of use
        key = fds
        cnt[("fdpair", key)] += 1
        if r == -11: cnt["splice EAGAIN"] += 1
        elif r < 0: cnt[f"splice err {r}"] += 1
        elif r == 0: cnt["splice 0"] += 1
        else:
            cnt[("bytes", key)] += r
            sizes.setdefault(key, collections.Counter())[bucket(r)] += 1
    elif ev.endswith("sys_enter_io_uring_enter"): cnt["io_uring_enter"] += 1
    elif ev.endswith("sys_enter_epoll_wait"): cnt["epoll_wait"] += 1
    elif ev.endswith("sched_switch"): cnt["switched out"] += 1
print(f"GB forwarded: {gb:.3f}")
for k in ("splice", "splice EAGAIN", "splice 0", "io_uring_enter", "epoll_wait", "switched out"):
    print(f"{k:16} {cnt[k]/gb:10.0f} per GB")
for k, v in sorted(cnt.items(), key=lambda kv: -kv[1] if isinstance(kv[0], tuple) else 0):
    if isinstance(k, tuple) and k[0] == "fdpair" and v / gb > 100:
        b = cnt[("bytes", k[1])]
        h = sizes.get(k[1], {})
        hist = " ".join(f"<={x//1024}K:{h[x]/gb:.0f}" for x in sorted(h))
        print(f"splice fd {k[1][0]}->{k[1][1]}: {v/gb:.0f} calls/GB, {b/max(1,sum(h.values()))/1024:.1f} KiB per non-empty call; {hist}")
