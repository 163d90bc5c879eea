"""One ringway in front of one backend, for the scripts in bench/ that
measure ringway alone (idle_cpu.py, stalled_mem.py): its configuration,
its start (waits until it accepts) and its stop, by PID."""

import os
import socket
import subprocess
import sys
import tempfile
import time

CONFIG = """apiVersion: networking.istio.io/v1
kind: Gateway
metadata:
  name: gw
spec:
  selector:
    istio: ingressgateway
  servers:
  - port:
      number: {listen}
      name: tcp
      protocol: TCP
    hosts:
    - "*"
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: svc
spec:
  hosts:
  - "*"
  gateways:
  - gw
  tcp:
  - route:
    - destination:
        host: svc
        port:
          number: 9000
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata:
  name: svc
spec:
  hosts:
  - svc.default.svc.cluster.local
  resolution: STATIC
  ports:
  - number: 9000
    name: tcp
    protocol: TCP
  endpoints:
  - address: 127.0.0.1
    ports:
      tcp: {backend}
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(binary, listen, backend, flags):
    """`ringway run` with one worker on 127.0.0.1:`listen` in front of
    127.0.0.1:`backend`; returns (process, config dir, first connection)
    once a connection through it succeeds."""
    work = tempfile.TemporaryDirectory()
    with open(os.path.join(work.name, "svc.yaml"), "w") as f:
        f.write(CONFIG.format(listen=listen, backend=backend))
    proxy = subprocess.Popen(
        [binary, "run", "-c", work.name, "--workers", "1", "--admin", "off", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 10
    while True:
        try:
            return proxy, work, socket.create_connection(("127.0.0.1", listen), timeout=1)
        except OSError:
            if time.time() > deadline:
                stop(proxy)
                sys.exit("ringway did not start")
            time.sleep(0.05)


def stop(proxy):
    """SIGTERM, then SIGKILL after 10 s."""
    proxy.terminate()
    try:
        proxy.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proxy.kill()
        proxy.wait()
