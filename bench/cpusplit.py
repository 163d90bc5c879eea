#!/usr/bin/env python3
"""cpusplit.py PERF.DATA CPU_SECONDS UNITS [LABEL]: where a proxy's CPU goes,
in CPU-microseconds per unit (a request, a connection), from a
`perf record -g -p PID` profile of the proxy and the proxy's own CPU time
over the same window (utime+stime from /proc/PID/stat).

Each sample is put in the first class its call stack (leaf first) reaches:
  wakeup     waking the process at the other end of a socket (on a VM, an
             inter-processor interrupt through the hypervisor)
  tcp        the TCP/IP stack, loopback delivery and socket calls included
             (the floor every proxy pays for the same bytes)
  io_uring   io_uring's own work (submission, completion, task work) not
             under a TCP frame
  sched      scheduling, wake-ups, futexes, epoll waits
  syscall    system-call entry and exit, other kernel work
  user       the proxy's own code and its libraries (malloc: `alloc`)
The shares of the samples are scaled to the measured CPU time, so the
classes add up to CPU_SECONDS / UNITS."""
import collections
import re
import subprocess
import sys

TCP = re.compile(r"^(tcp_|__tcp_|ip_|__ip_|ipv4_|inet_|__inet_|sk_|__sk_|sock_|__sock_|skb_|__skb_|"
                 r"kfree_skb|consume_skb|napi_|__napi_|net_rx|__netif|netif_|dev_|__dev_|loopback|"
                 r"process_backlog|do_softirq|handle_softirqs|__local_bh_enable|__sys_sendto|"
                 r"__sys_recvfrom|__sys_sendmsg|__sys_recvmsg|sendmsg|recvmsg|bbr_|__x64_sys_send|"
                 r"__x64_sys_recv|splice|do_splice|__do_splice|pipe_|__x64_sys_splice|__x64_sys_writev|"
                 r"__x64_sys_readv|do_writev|do_readv|vfs_writev|vfs_readv|sock_write_iter|"
                 r"sock_read_iter|__x64_sys_write|__x64_sys_read|ksys_write|ksys_read)")
WAKEUP = re.compile(r"^(try_to_wake_up|__wake_up|sock_def_readable|sk_stream_write_space|ep_poll_callback|"
                    r"default_wake_function|autoremove_wake_function|io_req_local_work_add|"
                    r"io_uring_poll|io_poll_wake|__io_poll_execute|pollwake)")
IO_URING = re.compile(r"^(io_|__io_|io_uring|__do_sys_io_uring|__x64_sys_io_uring)")
SCHED = re.compile(r"^(schedule|__schedule|try_to_wake_up|wake_up|__wake_up|futex|__futex|do_futex|"
                   r"ep_|do_epoll|__x64_sys_epoll|finish_task_switch|pick_next|dequeue_|enqueue_|"
                   r"ttwu|select_task_rq|update_curr|psi_)")
USER_ALLOC = re.compile(r"(malloc|free|realloc|_int_|tcache|__rdl_|__rust_alloc|__rust_dealloc)")


def classify(frames):
    """frames: [(sym, dso)] leaf first."""
    kernel = [s for s, d in frames if d.startswith("[kernel")]
    for s in kernel:
        if WAKEUP.match(s):
            return "wakeup"
    for s in kernel:
        if TCP.match(s):
            return "tcp"
    for s in kernel:
        if IO_URING.match(s):
            return "io_uring"
    for s in kernel:
        if SCHED.match(s):
            return "sched"
    if kernel and frames[0][1].startswith("[kernel"):
        return "syscall"
    leaf = frames[0][0] if frames else "?"
    return "alloc" if USER_ALLOC.search(leaf) else "user"


def main():
    data, cpu_s, units = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    label = sys.argv[4] if len(sys.argv) > 4 else data
    out = subprocess.run(["perf", "script", "-i", data, "-F", "period,ip,sym,dso"],
                         capture_output=True, text=True).stdout
    counts = collections.Counter()
    frames = []
    for line in out.splitlines():
        if not line.strip():
            if frames:
                counts[classify(frames)] += 1
            frames = []
            continue
        m = re.match(r"^\s*(?:\d+\s+)?[0-9a-f]+\s+(.+?)\s+\((.*)\)\s*$", line)
        if m:
            sym = m.group(1).split("+")[0]
            frames.append((sym, m.group(2)))
    if frames:
        counts[classify(frames)] += 1
    total = sum(counts.values()) or 1
    per_unit_us = cpu_s / units * 1e6
    order = ["user", "alloc", "io_uring", "syscall", "sched", "wakeup", "tcp"]
    cells = [f"{c} {per_unit_us * counts[c] / total:.2f}" for c in order]
    print(f"{label}: {per_unit_us:.2f} CPU-us per unit ({total} samples): " + ", ".join(cells))


if __name__ == "__main__":
    main()
