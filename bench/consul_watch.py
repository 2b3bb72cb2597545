#!/usr/bin/env python3
"""Idle cost of Consul blocking queries (method and figures: BENCHMARKS.md, "Consul watches").

Started by bench/consul_watch.sh with the release binary. Starts `signpost serve` on
loopback ports with a fresh data dir, registers `web` and `api`, then measures signpost's
CPU (utime+stime of /proc/<pid>/stat, in clock ticks) over the same window in each phase:

  idle        no request at all
  watching    N blocking `GET /v1/health/service/web?index=I&wait=10m` parked (one
              connection each), nothing changing
  other       the same N watches while `api` changes C times (each change wakes every
              watch to compare its service's index; none answers)
  baseline    C changes of `api` with no watch parked

then changes `web` once and times until all N watches have answered. Every watch must
still be parked before that change (none answered early), and all must answer after it.
"""

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import json
import urllib.request


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime, stime (fields 14, 15)


def cpu_ns(pid):
    """Time on CPU of the live threads, ns (schedstat): finer than the ticks of /proc/pid/stat,
    which count threads that exited too; both are reported."""
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/schedstat") as f:
                total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def request(base, method, path, body=None):
    req = urllib.request.Request(base + path, method=method, data=body)
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read()


def register(base, name, sid, port):
    body = json.dumps({"Name": name, "ID": sid, "Address": "127.0.0.1", "Port": port})
    status, _, _ = request(base, "PUT", "/v1/agent/service/register", body.encode())
    assert status == 200


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--watches", type=int, default=1000)
    ap.add_argument("--window", type=float, default=10.0, help="seconds per phase")
    ap.add_argument("--changes", type=int, default=100)
    a = ap.parse_args()
    hz = os.sysconf("SC_CLK_TCK")

    tmp = tempfile.mkdtemp(prefix="consul-watch-")
    http, dns = free_port(), free_port()
    cfg = os.path.join(tmp, "signpost.toml")
    with open(cfg, "w") as f:
        f.write(
            f'[dns]\nlisten = ["127.0.0.1:{dns}"]\n'
            f'[http]\nlisten = "127.0.0.1:{http}"\nmax_watchers = {a.watches + 100}\n'
            f'max_connections = {a.watches + 100}\n'
            f'[registry]\ndata_dir = "{tmp}/data"\n'
        )
    proc = subprocess.Popen(
        [a.bin, "serve", "--config", cfg],
        stdout=subprocess.DEVNULL,
        stderr=open(os.path.join(tmp, "log"), "w"),
    )
    base = f"http://127.0.0.1:{http}"
    try:
        for _ in range(100):
            try:
                request(base, "GET", "/healthz")
                break
            except OSError:
                time.sleep(0.05)
        register(base, "web", "web-1", 8080)
        register(base, "api", "api-1", 9000)
        _, headers, _ = request(base, "GET", "/v1/health/service/web")
        index = headers["X-Consul-Index"]

        def window(what, action=None):
            t0, c0, n0 = time.monotonic(), cpu_ticks(proc.pid), cpu_ns(proc.pid)
            if action:
                action()
            rest = a.window - (time.monotonic() - t0)
            if rest > 0:
                time.sleep(rest)
            ticks = cpu_ticks(proc.pid) - c0
            ns = cpu_ns(proc.pid) - n0
            secs = time.monotonic() - t0
            print(f"{what:<58} {ns / 1e6:8.2f} ms CPU ({ticks * 1000 // hz} ms in ticks) "
                  f"in {secs:4.1f} s = {ns / 1e9 / secs * 100:6.3f} % of a core")
            return ns

        idle = window("idle, no watch")

        socks = []
        req = (f"GET /v1/health/service/web?index={index}&wait=10m HTTP/1.1\r\n"
               f"Host: 127.0.0.1\r\n\r\n").encode()
        for _ in range(a.watches):
            s = socket.create_connection(("127.0.0.1", http))
            s.sendall(req)
            s.setblocking(False)
            socks.append(s)
        time.sleep(1.0)  # every request read and parked

        def answered():
            n = 0
            for s in socks:
                try:
                    if s.recv(65536, socket.MSG_PEEK):
                        n += 1
                except BlockingIOError:
                    pass
            return n

        watching = window(f"{a.watches} watches parked, nothing changing")
        assert answered() == 0, "a watch answered with nothing changed"

        def churn():
            for i in range(a.changes):
                register(base, "api", "api-1", 9000 + 1 + i % 2)

        other = window(f"{a.watches} watches, {a.changes} changes of another service", churn)
        early = answered()
        assert early == 0, f"{early} watches on web woke for changes of api"

        t0 = time.monotonic()
        register(base, "web", "web-2", 8081)
        deadline = t0 + 30
        while answered() < a.watches and time.monotonic() < deadline:
            time.sleep(0.005)
        n = answered()
        print(f"one change of web: {n}/{a.watches} watches answered in "
              f"{(time.monotonic() - t0) * 1000:.0f} ms")
        assert n == a.watches
        for s in socks:
            s.close()
        time.sleep(0.5)
        baseline = window(f"no watch, {a.changes} changes of another service", churn)
        print(f"watching - idle: {(watching - idle) / 1e6:+.2f} ms CPU over the window; "
              f"changes with/without watches: {other / max(baseline, 1):.2f}x "
              f"({other / 1e6:.2f} vs {baseline / 1e6:.2f} ms)")
    finally:
        proc.terminate()
        proc.wait(10)


if __name__ == "__main__":
    sys.exit(main())
