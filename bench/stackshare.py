#!/usr/bin/env python3
"""stackshare.py PERF.DATA BYTES CPU FUNC...: CPU-ms per GB of samples on CPU
whose call stack contains FUNC (inclusive), and for the first FUNC the
frames right below it (what it spends its time in)."""
import collections, re, subprocess, sys
data, nbytes, cpu, funcs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4:]
gb = nbytes / 1e9
out = subprocess.run(["perf", "script", "-i", data, "-F", "comm,cpu,period,ip,sym"], capture_output=True, text=True).stdout
incl = collections.Counter(); below = collections.Counter(); total = 0.0
head = re.compile(r"^\s*(.+?)\s+\[(\d+)\]\s+(\d+)")
def flush(stack, c, ms):
    global total
    if c != cpu: return
    total += ms
    for f in funcs:
        if f in stack: incl[f] += ms
    if funcs[0] in stack:
        i = stack.index(funcs[0])
        below[" <- ".join(reversed(stack[max(0, i-3):i])) or "(self)"] += ms
stack, c, ms = [], None, 0
for line in out.splitlines():
    m = head.match(line)
    if m:
        if c is not None: flush(stack, c, ms)
        stack, c, ms = [], int(m.group(2)), int(m.group(3)) / 1e6
    elif line.strip():
        w = line.split(None, 1)
        if len(w) > 1: stack.append(w[1].split("+")[0].strip())
if c is not None: flush(stack, c, ms)
print(f"CPU {cpu}: {total/gb:.0f} ms/GB sampled")
for f in funcs: print(f"  {incl[f]/gb:7.1f} ms/GB under {f}")
print(f"  below {funcs[0]}:")
for k, v in below.most_common(8): print(f"  {v/gb:7.1f} ms/GB  {k}")
