#!/usr/bin/env python3
"""One download through each path, read by a Python client (issue 27).

The far end sends with sendfile(2); the client reads with recv_into() into
a 64 KiB buffer, as an app's HTTP library would. Paths: direct,
egress-sentinel with relay = "copy" and "splice" (the release binary),
HAProxy `mode tcp` with splice and 1 MiB pipes, Squid (when installed).
Rounds are interleaved (a different path first each round). Reported per
path: MiB/s (median over rounds), the ratio to direct's and its range, and
the proxy's CPU per GiB from /proc/PID/task/*/schedstat.

    cargo build --release
    python3 benches/download.py                 # 5 rounds × 512 MiB
    ROUNDS=3 MIB=256 python3 benches/download.py
    ip netns exec bench python3 benches/download.py   # quieter

Nothing leaves 127.0.0.0/8: every address here is 127.0.0.1.
"""

import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROUNDS = int(os.environ.get("ROUNDS", "5"))
MIB = int(os.environ.get("MIB", "512"))
BIN = os.environ.get(
    "SIDECAR_BIN",
    os.path.join(os.path.dirname(__file__), "..", "target", "release", "egress-sentinel"),
)
CHUNK = 64 * 1024


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def sender(total):
    """A server that sends `total` bytes of a file with sendfile to each client."""
    f = tempfile.TemporaryFile()
    f.write(b"\x5a" * (16 << 20))
    f.flush()
    size = 16 << 20
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(64)

    def one(c):
        try:
            send(c)
        except OSError:
            pass  # the sidecar's own probe of the far end hangs up at once

    def send(c):
        with c:
            left = total
            while left > 0:
                off = 0
                while off < size and left > 0:
                    n = os.sendfile(c.fileno(), f.fileno(), off, min(size - off, left))
                    if n == 0:
                        return
                    off += n
                    left -= n

    def serve():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=one, args=(c,), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    return srv.getsockname()[1]


def wait_port(port, proc, name):
    for _ in range(200):
        if proc.poll() is not None:
            sys.exit(f"{name} exited: {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    sys.exit(f"{name} did not listen on {port}")


def sidecar(relay, far, tmp):
    port = free_port()
    conf = os.path.join(tmp, f"sidecar-{relay}.toml")
    with open(conf, "w") as f:
        f.write(
            f"""[listen]
metrics = "off"
admin = "off"
proxy = "127.0.0.1:{port}"
[probe]
interval = "1h"
[tls]
roots = "webpki"
[[target]]
name = "far"
url = "https://127.0.0.1:{far}/"
routes = ["direct"]
allow_addresses = ["127.0.0.1/32"]
[forward]
default = "deny"
relay = "{relay}"
"""
        )
    p = subprocess.Popen([BIN, "run", "--config", conf], env={**os.environ, "RUST_LOG": os.environ.get("SIDECAR_LOG", "error")})
    wait_port(port, p, f"egress-sentinel {relay}")
    return p, ("connect", port)


def haproxy(far, tmp):
    if not shutil.which("haproxy"):
        print("haproxy not installed: skipped", file=sys.stderr)
        return None
    port = free_port()
    conf = os.path.join(tmp, "haproxy.cfg")
    with open(conf, "w") as f:
        f.write(
            "global\n  maxconn 4000\n  tune.pipesize 1048576\n"
            "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 600s\n"
            "  timeout server 600s\n  option splice-request\n  option splice-response\n"
            f"listen far\n  bind 127.0.0.1:{port}\n  server s 127.0.0.1:{far}\n"
        )
    p = subprocess.Popen(["haproxy", "-db", "-f", conf], stdout=subprocess.DEVNULL)
    wait_port(port, p, "haproxy")
    return p, ("forward", port)


def squid(tmp):
    if not os.path.exists("/usr/sbin/squid"):
        print("squid not installed: skipped", file=sys.stderr)
        return None
    port = free_port()
    d = os.path.join(tmp, "squid")
    os.makedirs(d)
    os.chmod(d, 0o777)
    with open(os.path.join(d, "hosts"), "w") as f:
        f.write("127.0.0.1 localhost\n")
    conf = os.path.join(d, "squid.conf")
    with open(conf, "w") as f:
        f.write(
            f"http_port 127.0.0.1:{port}\nhttp_access allow all\ncache deny all\n"
            f"cache_mem 8 MB\npid_filename none\naccess_log none\ncache_log {d}/cache.log\n"
            f"coredump_dir {d}\nhosts_file {d}/hosts\ndns_nameservers 127.0.0.1\n"
            "shutdown_lifetime 0 seconds\n"
        )
    p = subprocess.Popen(["/usr/sbin/squid", "-N", "-f", conf])
    wait_port(port, p, "squid")
    return p, ("connect", port)


def cpu_ns(pid):
    """CPU time of every thread of `pid` and its children, in ns."""
    total = 0
    pids = [pid]
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            pids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    for p in pids:
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def download(entry, far):
    """Seconds to read MIB MiB along `entry`."""
    kind, port = entry
    s = socket.create_connection(("127.0.0.1", port if kind != "direct" else far))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if kind == "connect":
        s.sendall(f"CONNECT 127.0.0.1:{far} HTTP/1.1\r\nHost: 127.0.0.1:{far}\r\n\r\n".encode())
        head = b""
        while not head.endswith(b"\r\n\r\n"):
            b = s.recv(1)
            if not b:
                sys.exit("the proxy closed before its answer")
            head += b
        if not head.startswith(b"HTTP/1.1 200") and not head.startswith(b"HTTP/1.0 200"):
            sys.exit(f"the proxy answered {head!r}")
    buf = bytearray(CHUNK)
    view = memoryview(buf)
    want = MIB << 20
    got = 0
    start = time.perf_counter()
    while got < want:
        n = s.recv_into(view)
        if n == 0:
            sys.exit(f"ended after {got} of {want} bytes")
        got += n
    took = time.perf_counter() - start
    s.close()
    return took


def main():
    far = sender(MIB << 20)
    tmp = tempfile.mkdtemp()
    paths = [("direct", None, ("direct", far))]
    for relay in ("copy", "splice"):
        p, e = sidecar(relay, far, tmp)
        paths.append((f"egress-sentinel {relay}", p, e))
    for name, made in (("haproxy-splice", haproxy(far, tmp)), ("squid", squid(tmp))):
        if made:
            paths.append((name, made[0], made[1]))
    speed = {name: [] for name, _, _ in paths}
    cpu = {name: [] for name, _, _ in paths}
    try:
        for r in range(ROUNDS):
            order = paths[r % len(paths):] + paths[: r % len(paths)]
            for name, proc, entry in order:
                before = cpu_ns(proc.pid) if proc else 0
                took = download(entry, far)
                if proc:
                    cpu[name].append((cpu_ns(proc.pid) - before) / 1e9 / (MIB / 1024))
                speed[name].append(MIB / took)
            print(f"round {r + 1} of {ROUNDS} done", file=sys.stderr)
    finally:
        for _, proc, _ in paths:
            if proc:
                proc.send_signal(signal.SIGTERM)
        for _, proc, _ in paths:
            if proc:
                proc.wait(timeout=10)
        shutil.rmtree(tmp, ignore_errors=True)
    direct = statistics.median(speed["direct"])
    print(f"{ROUNDS} rounds, interleaved; one download of {MIB} MiB, sendfile at the far end, "
          f"a Python client reading 64 KiB at a time")
    print(f"{'path':<24} {'MiB/s':>7} {'x direct (range)':>18} {'CPU s/GiB':>10}")
    for name, _, _ in paths:
        s = speed[name]
        c = f"{statistics.median(cpu[name]):.3f}" if cpu[name] else "-"
        print(f"{name:<24} {statistics.median(s):>7.0f} {statistics.median(s) / direct:>6.2f} "
              f"({min(s) / direct:.2f}-{max(s) / direct:.2f}) {c:>10}")


if __name__ == "__main__":
    main()
