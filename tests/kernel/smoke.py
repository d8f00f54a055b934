#!/usr/bin/env python3
"""Kernel smoke suite: the real observer binary on whatever kernel this runs on.

`cargo xtask test` runs it on the host and, through `xtask vm`, inside QEMU on each kernel of
the matrix. It starts real servers (Python's http.server, a forking parent, an OpenSSL HTTPS
server, a server inside a cgroup, one that accepts with no address buffer as Node.js does), drives them with curl, runs observer twice (raw syscall
tracepoints; then per-syscall tracepoints with the cgroup helper refused, so both fallbacks
run), and checks what observer wrote. It prints one line per item, then one line
`SMOKE-RESULT {json}` that xtask reads; it exits 1 when an item fails.

Usage: smoke.py OBSERVER_BINARY WORK_DIR
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time

OBSERVER = sys.argv[1]
WORK = sys.argv[2]
REQUESTS = 5


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"nothing listens on port {port} after {timeout} s")


def cgroup2_root():
    with open("/proc/mounts") as f:
        for line in f:
            parts = line.split()
            if len(parts) > 2 and parts[2] == "cgroup2":
                return parts[1]
    raise RuntimeError("no cgroup2 mount in /proc/mounts")


HTTP_SERVER = """
import http.server, sys
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def do_GET(self):
        if self.path.startswith("/vector"):
            # The answer as 20 iovecs of one sendmsg, its length and body in the last: the
            # kernel copies eight per program run and tail-calls the next run.
            body = b'{"vector":true}'
            parts = [b"HTTP/1.1 200 OK\\r\\n"] + [f"X-Pad-{i}: {i}\\r\\n".encode() for i in range(18)]
            parts.append(f"Content-Length: {len(body)}\\r\\n\\r\\n".encode() + body)
            self.connection.sendmsg(parts)
            return
        code = 404 if self.path.startswith("/missing") else 200
        body = b'{"ok":true}' if code == 200 else b'{"error":"not found"}'
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *a):
        pass
srv = http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), H)
if len(sys.argv) > 3:
    import ssl
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(sys.argv[2], sys.argv[3])
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
srv.serve_forever()
"""

# Waits for a file to appear, then forks: the child serves HTTP until the file `stop` appears,
# then exits; the parent stays. The fork happens while observer watches the parent.
FORKING_PARENT = """
import os, sys, time, subprocess
port, go, stop = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.1)
pid = os.fork()
if pid == 0:
    import http.server, threading
    class H(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")
        def log_message(self, *a):
            pass
    srv = http.server.HTTPServer(("127.0.0.1", int(port)), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    with open(go + ".child", "w") as f:
        f.write(str(os.getpid()))
    while not os.path.exists(stop):
        time.sleep(0.1)
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(3600)
"""


# Accepts the way Node.js's libuv does, with no address buffer (accept4(fd, NULL, NULL, 0)), on a
# dual-stack socket, answers at once and closes: the client's address is only in the kernel's
# socket (as ::ffff:a.b.c.d), and the connection is gone before observer handles its records.
NULL_ACCEPT_SERVER = """
import ctypes, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", int(sys.argv[1])))
s.listen(64)
while True:
    fd = libc.accept4(s.fileno(), None, None, 0)
    if fd < 0:
        continue
    try:
        head = b""
        while b"\\r\\n\\r\\n" not in head:
            chunk = os.read(fd, 4096)
            if not chunk:
                break
            head += chunk
        if head:
            os.write(fd, b"HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok")
    except OSError:
        pass
    os.close(fd)
"""

# One-request connections to the server above, each from its own loopback address.
PEERS = 10


class Servers:
    """Every server the items need, started once and shared by both observer runs."""

    def __init__(self):
        self.procs = []
        os.makedirs(WORK, exist_ok=True)
        self.server_py = os.path.join(WORK, "server.py")
        with open(self.server_py, "w") as f:
            f.write(HTTP_SERVER)
        self.http_port = free_port()
        self.http = self.spawn([sys.executable, self.server_py, str(self.http_port)])
        cert, key = os.path.join(WORK, "cert.pem"), os.path.join(WORK, "key.pem")
        subprocess.run(
            ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj",
             "/CN=localhost", "-keyout", key, "-out", cert, "-days", "1"],
            check=True, capture_output=True)
        self.https_port = free_port()
        self.https = self.spawn(
            [sys.executable, self.server_py, str(self.https_port), cert, key])
        self.cgroup = os.path.join(cgroup2_root(), f"observer-smoke-{os.getpid()}")
        os.makedirs(self.cgroup, exist_ok=True)
        self.cg_port = free_port()
        self.cg = self.spawn_in_cgroup(self.cg_port)
        self.peer_port = free_port()
        self.peer = self.spawn([sys.executable, "-c", NULL_ACCEPT_SERVER, str(self.peer_port)])
        for p in (self.http_port, self.https_port, self.cg_port, self.peer_port):
            wait_port(p)

    def spawn(self, argv):
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.procs.append(p)
        return p

    def spawn_in_cgroup(self, port):
        return self.spawn(["sh", "-c", 'echo $$ > "$1/cgroup.procs" && exec "$2" "$3" "$4"',
                           "sh", self.cgroup, sys.executable, self.server_py, str(port)])

    def close(self):
        for p in self.procs:
            p.kill()
            p.wait()
        try:
            os.rmdir(self.cgroup)
        except OSError:
            pass


def curl(url, *extra):
    r = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", *extra, url],
                       capture_output=True, text=True, timeout=30)
    return r.stdout


class Observer:
    def __init__(self, name, args, env=None):
        self.out = os.path.join(WORK, f"{name}.json")
        self.err = os.path.join(WORK, f"{name}.stderr")
        for f in (self.out,):
            if os.path.exists(f):
                os.unlink(f)
        full_env = dict(os.environ, **(env or {}))
        self.proc = subprocess.Popen([OBSERVER, "run", "--output", self.out, *args],
                                     stdout=subprocess.DEVNULL, stderr=open(self.err, "w"),
                                     env=full_env)
        deadline = time.time() + 180
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"observer exited with {self.proc.returncode}: "
                                   + open(self.err).read()[-3000:])
            if os.path.exists(self.out) and "sys_startup" in open(self.out).read():
                return
            time.sleep(0.3)
        raise RuntimeError("observer did not start within 180 s: " + open(self.err).read()[-3000:])

    def stop(self):
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise RuntimeError("observer did not stop within 60 s of SIGINT")
        lines = [json.loads(l) for l in open(self.out) if l.strip()]
        if self.proc.returncode != 0:
            raise RuntimeError(f"observer exited with {self.proc.returncode}: "
                               + open(self.err).read()[-2000:])
        return lines


def action(ev):
    return ev.get("event", {}).get("action")


def exchanges(lines, pid=None):
    out = [e for e in lines if "http" in e and "url" in e]
    return [e for e in out if pid is None or e.get("process", {}).get("pid") == pid]


def one_run(name, servers, args, env, fork_port):
    """Runs observer over every server, drives traffic, returns its lines and the child's pid."""
    go = os.path.join(WORK, f"{name}.go")
    stop = os.path.join(WORK, f"{name}.stop")
    for f in (go, stop, go + ".child"):
        if os.path.exists(f):
            os.unlink(f)
    parent = servers.spawn([sys.executable, "-c", FORKING_PARENT, str(fork_port), go, stop])
    time.sleep(0.5)
    obs = Observer(name, ["--pid", str(servers.http.pid), "--pid", str(servers.https.pid),
                          "--pid", str(parent.pid), "--pid", str(servers.peer.pid),
                          "--cgroup", servers.cgroup, *args], env)
    # A process that enters the target cgroup after observer started.
    late_port = free_port()
    late = servers.spawn_in_cgroup(late_port)
    open(go, "w").close()
    wait_port(fork_port)
    wait_port(late_port)
    # The userspace cgroup scan runs once a second.
    time.sleep(2.5)
    codes = []
    for i in range(REQUESTS):
        path = f"/missing/{i}" if i % 2 else f"/item/{i}"
        codes.append(curl(f"http://127.0.0.1:{servers.http_port}{path}"))
    servers.vector_code = curl(f"http://127.0.0.1:{servers.http_port}/vector")
    curl(f"https://127.0.0.1:{servers.https_port}/secure", "-k")
    curl(f"http://127.0.0.1:{fork_port}/forked")
    curl(f"http://127.0.0.1:{servers.cg_port}/in-cgroup")
    curl(f"http://127.0.0.1:{late_port}/joined-later")
    net = 40 if name == "raw" else 41
    # The peer server has been blocked in accept4 since before observer attached: this first
    # connection is the one that call returns with, adopted from /proc at startup.
    servers.adopted_src = f"127.0.{net}.200"
    servers.adopted_code = curl(f"http://127.0.0.1:{servers.peer_port}/adopted",
                                "--interface", servers.adopted_src)
    servers.peer_codes = {}
    for i in range(1, PEERS + 1):
        src = f"127.0.{net}.{i}"
        servers.peer_codes[f"/from/{src}"] = curl(
            f"http://127.0.0.1:{servers.peer_port}/from/{src}", "--interface", src)
    child = int(open(go + ".child").read())
    open(stop, "w").close()
    # The child exits; observer must notice.
    time.sleep(2)
    lines = obs.stop()
    parent.kill()
    parent.wait()
    late.kill()
    late.wait()
    return lines, codes, child, late.pid


def check(results, item, ok, detail):
    results.append({"item": item, "ok": bool(ok), "detail": detail})
    print(f"{'PASS' if ok else 'FAIL'} {item}: {detail}", flush=True)


def checks(results, tag, lines, codes, child, late, servers, want_hook, want_cgroup):
    startup = next((e for e in lines if action(e) == "sys_startup"), None)
    shutdown = next((e for e in lines if action(e) == "sys_shutdown"), None)
    cap = (startup or {}).get("observer", {}).get("capture", {})
    go_refused = [f for f in cap.get("fallbacks", []) if f.startswith("Go crypto/tls")]
    check(results, f"load_attach[{tag}]",
          cap.get("syscall_hook") == want_hook and cap.get("tls") == "uprobes" and not go_refused,
          f"syscall_hook={cap.get('syscall_hook')} tls={cap.get('tls')} "
          f"exit={cap.get('process_exit')} fallbacks={len(cap.get('fallbacks', []))}"
          + (f" {go_refused}" if go_refused else ""))
    got = [(e["http"]["request"]["method"], e["url"]["path"], e["http"]["response"]["status_code"])
           for e in exchanges(lines, servers.http.pid) if e["url"]["path"] != "/vector"]
    want = [("GET", f"/missing/{i}" if i % 2 else f"/item/{i}", 404 if i % 2 else 200)
            for i in range(REQUESTS)]
    check(results, f"http_exact[{tag}]", got == want and codes == [str(w[2]) for w in want],
          f"{len(got)} of {REQUESTS} exchanges as sent" if got == want else f"got {got}")
    vector = [e for e in exchanges(lines, servers.http.pid) if e["url"]["path"] == "/vector"]
    check(results, f"vector_copy[{tag}]",
          len(vector) == 1 and servers.vector_code == "200"
          and vector[0]["http"]["response"].get("status_code") == 200
          and vector[0]["http"]["response"]["body"]["bytes"] == 15
          and not vector[0]["observer"].get("truncated")
          and not vector[0]["observer"].get("partial_capture"),
          f"an answer of 20 iovecs (curl {servers.vector_code}): "
          + (json.dumps(vector[0]["http"]["response"]) if vector else "no exchange"))
    forked = [e["url"]["path"] for e in exchanges(lines, child)]
    stats = (shutdown or {}).get("observer", {}).get("stats", {})
    procs = stats.get("processes", {})
    check(results, f"fork_followed[{tag}]", forked == ["/forked"] and procs.get("forked", 0) >= 1,
          f"child {child}: {forked}, forked={procs.get('forked')}")
    check(results, f"exit_seen[{tag}]", procs.get("exited", 0) >= 1,
          f"exited={procs.get('exited')} (the forked child)")
    tls = [e for e in exchanges(lines, servers.https.pid)
           if e.get("tls", {}).get("established") is True]
    check(results, f"https_openssl[{tag}]",
          [e["url"]["path"] for e in tls] == ["/secure"]
          and all(e["http"]["response"]["status_code"] == 200 for e in tls),
          f"{len(tls)} TLS exchange(s) from the Python ssl server")
    cg = [e["url"]["path"] for e in exchanges(lines, servers.cg.pid)]
    joined = [e["url"]["path"] for e in exchanges(lines, late)]
    check(results, f"cgroup_target[{tag}]",
          cg == ["/in-cgroup"] and joined == ["/joined-later"]
          and cap.get("cgroup_targets") == want_cgroup,
          f"cgroup_targets={cap.get('cgroup_targets')}, present {cg}, joined later {joined}")
    adopted = [e.get("source", {}).get("ip") for e in exchanges(lines, servers.peer.pid)
               if e["url"]["path"] == "/adopted"]
    check(results, f"blocked_accept[{tag}]",
          adopted == [servers.adopted_src] and servers.adopted_code == "200",
          f"the accept blocked when observer attached returned with {servers.adopted_src} "
          f"(curl {servers.adopted_code}): exchanges {adopted}")
    peers = [(e["url"]["path"], e.get("source", {}).get("ip"))
             for e in exchanges(lines, servers.peer.pid) if e["url"]["path"] != "/adopted"]
    wrong = [p for p in peers if p[0] != f"/from/{p[1]}"]
    seen = {p[0] for p in peers}
    missing = {path: code for path, code in servers.peer_codes.items() if path not in seen}
    check(results, f"accept_peer[{tag}]",
          len(peers) == PEERS and not wrong and cap.get("accept_addresses") == "kernel_socket",
          f"accept_addresses={cap.get('accept_addresses')}, {len(peers) - len(wrong)} of "
          f"{PEERS} accepts with no address buffer name their client"
          + (f"; wrong: {wrong}" if wrong else "")
          + (f"; no exchange for (path: curl's status) {missing}" if missing else ""))
    losses = stats.get("kernel_losses", {})
    total = len(exchanges(lines))
    check(results, f"shutdown_counters[{tag}]",
          shutdown is not None and stats.get("exchanges") == total
          # The adopted accept's exchange is blocked_accept's to judge.
          and total == REQUESTS + 5 + PEERS + len(adopted)
          and losses and all(v == 0 for v in losses.values()),
          f"exchanges={stats.get('exchanges')} lines={total} kernel_losses={losses}")


def main():
    results = []
    servers = Servers()
    try:
        raw_arch = os.uname().machine == "x86_64"
        lines, codes, child, late = one_run("raw", servers,
                                            ["--syscall-hook", "raw" if raw_arch else "auto"],
                                            None, free_port())
        checks(results, "raw", lines, codes, child, late, servers,
               "raw_tracepoints" if raw_arch else "syscall_tracepoints", "kernel")
        env = {"OBSERVER_REFUSE_FEATURES": "raw_tracepoint,ancestor_cgroup,group_dead"}
        lines, codes, child, late = one_run("fallback", servers, [], env, free_port())
        checks(results, "fallback", lines, codes, child, late, servers,
               "syscall_tracepoints", "userspace_scan")
        startup = next(e for e in lines if action(e) == "sys_startup")
        fb = startup["observer"]["capture"].get("fallbacks", [])
        check(results, "fallbacks_reported",
              any("raw" in f for f in fb) and any("cgroup" in f for f in fb),
              f"{len(fb)} fallbacks in sys_startup")
    except Exception as e:  # a broken run is a failed item, reported with its reason
        check(results, "run", False, f"{type(e).__name__}: {e}")
    finally:
        servers.close()
    print("SMOKE-RESULT " + json.dumps({"kernel": os.uname().release, "results": results}),
          flush=True)
    sys.exit(0 if results and all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
