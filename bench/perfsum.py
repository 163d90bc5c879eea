#!/usr/bin/env python3
"""perfsum.py PERF.DATA BYTES [N]: per-CPU time split of a `perf record -a
-g -e cpu-clock` profile, in CPU-milliseconds per GB forwarded: by command
(threads), and the top N (command, leaf symbol) pairs per CPU."""
import collections, re, subprocess, sys
data, nbytes = sys.argv[1], int(sys.argv[2])
top = int(sys.argv[3]) if len(sys.argv) > 3 else 15
gb = nbytes / 1e9
out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,cpu,period,ip,sym", "--max-stack=1"],
                     capture_output=True, text=True).stdout
per = collections.Counter(); bycomm = collections.Counter(); tot = collections.Counter()
head = re.compile(r"^\s*(.+?)\s+\[(\d+)\]\s+(\d+)")
cur = None
for line in out.splitlines():
    m = head.match(line)
    if m:
        cur = (m.group(2), m.group(1), int(m.group(3)) / 1e6)
        continue
    if cur and line.strip():
        cpu, comm, ms = cur
        sym = line.split(None, 1)[1] if len(line.split(None, 1)) > 1 else "?"
        comm = re.sub(r"\d+$", "N", comm) if comm.startswith("ksoftirqd") else comm
        per[(cpu, comm, sym)] += ms; bycomm[(cpu, comm)] += ms; tot[cpu] += ms
        cur = None
for cpu in sorted(tot):
    print(f"CPU {int(cpu)}: {tot[cpu]/gb:.0f} ms/GB sampled (busy and idle)")
    for (c, comm), ms in bycomm.most_common():
        if c == cpu and ms / gb >= 5:
            print(f"   {ms/gb:7.0f} ms/GB  {comm}")
    print("   top leaf symbols:")
    n = 0
    for (c, comm, sym), ms in per.most_common():
        if c == cpu and n < top:
            print(f"   {ms/gb:7.0f} ms/GB  {comm:14} {sym}")
            n += 1
