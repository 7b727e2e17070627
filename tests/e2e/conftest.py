"""End-to-end test harness: starts the real `spool` binary on a temporary
data directory and talks to it over real HTTP (loopback TCP) and its admin
unix socket. Nothing here sleeps to wait: every wait polls a condition
against a deadline."""

import http.client
import json
import os
import signal
import socket
import subprocess
import threading
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPOOL = os.environ.get("SPOOL_BIN", os.path.join(ROOT, "zig-out", "asan", "bin", "spool"))

# The sanitized build reports memory errors; leak checking is the unit
# tests' job (the server exits without tearing down h2o).
ENV = dict(os.environ, ASAN_OPTIONS="detect_leaks=0:abort_on_error=1", UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1")


def wait_for(cond, timeout=30.0, what="condition"):
    """Polls cond() until it returns a truthy value or the deadline passes."""
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)  # a poll interval, not a wait for the event itself
        delay = min(delay * 2, 0.1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.unix_path)


def run_spool(*args, data=None, check=False, timeout=120, input=None):
    cmd = [SPOOL, *args]
    if data is not None:
        cmd += ["--data", str(data)]
    p = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=timeout, input=input)
    if check and p.returncode != 0:
        raise AssertionError(f"{cmd} exited {p.returncode}: {p.stderr}")
    return p


class Server:
    """A running `spool serve`. slots: local agent slots (0 keeps the log to
    what the test itself appends: agents log their registration)."""

    def __init__(self, data, slots=0, extra_args=(), host="127.0.0.1", wrap=()):
        self.data = str(data)
        self.slots = slots
        self.extra_args = list(extra_args)
        self.host = host  # where it listens; another host's address when wrap enters a network namespace
        self.wrap = list(wrap)  # e.g. ["ip", "netns", "exec", NAME]
        self.port = free_port()
        self.proc = None
        self.stderr_path = os.path.join(self.data + ".stderr")

    @property
    def sock_path(self):
        return os.path.join(self.data, "spool.sock")

    def start(self, wait_ready=True):
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [*self.wrap, SPOOL, "serve", "--data", self.data, "--listen", f"{self.host}:{self.port}", "--slots",
             str(self.slots),
             *self.extra_args],
            stdout=subprocess.DEVNULL, stderr=self.stderr, env=ENV)
        wait_for(lambda: self._answers() or self.proc.poll() is not None, what="server to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"spool serve exited {self.proc.returncode}: {self.log_text()}")
        if wait_ready:
            wait_for(lambda: self.get("/ready")[0] == 200, what="/ready")
        return self

    def _answers(self):
        try:
            with socket.create_connection((self.host, self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def log_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def request(self, method, path, body=None, admin=False, headers=None):
        conn = UnixHTTPConnection(self.sock_path) if admin else http.client.HTTPConnection(self.host, self.port,
                                                                                          timeout=30)
        try:
            data = json.dumps(body) if isinstance(body, (dict, list)) else body
            conn.request(method, path, body=data, headers=headers or {})
            r = conn.getresponse()
            return r.status, r.read(), dict(r.getheaders())
        finally:
            conn.close()

    def get(self, path, admin=False):
        s, b, _ = self.request("GET", path, admin=admin)
        return s, b

    def get_json(self, path, admin=False):
        s, b = self.get(path, admin)
        return s, json.loads(b)

    def append(self, type_, body):
        """Appends through the admin socket; returns the sequence (201) or raises."""
        s, b, _ = self.request("POST", "/admin/log/append", {"type": type_, "body": body}, admin=True)
        if s != 201:
            raise AssertionError(f"append answered {s}: {b!r}")
        return json.loads(b)["sequence"]

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if self.proc is None:
            return None
        self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        finally:
            self.stderr.close()
        self.proc = None
        return rc

    def kill(self):
        return self.stop(signal.SIGKILL)

    def status(self):
        s, st = self.get_json("/status")
        assert s == 200, st
        return st

    def wait_caught_up(self, timeout=60.0):
        """Polls /status until every projection has applied the head;
        returns that /status document."""
        def caught_up():
            st = self.status()
            if st["ready"] and all(p["lag"] == 0 and p["checkpoint"] == st["head_sequence"] for p in st["projections"]):
                return st
            return None
        return wait_for(caught_up, timeout=timeout, what="views to catch up (/status lag 0)")

    def dump_views(self):
        s, b = self.get("/admin/views/dump", admin=True)
        assert s == 200, b
        return b.decode()


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def server(data_dir):
    s = Server(data_dir)
    yield s
    if s.proc is not None:
        s.kill()


# ---- helpers added for the foundation end-to-end tests ----

def spool_popen(*args, stdout=subprocess.PIPE, stderr=subprocess.PIPE):
    """Starts `spool ARGS...` without waiting (the caller owns the process)."""
    return subprocess.Popen([SPOOL, *args], stdout=stdout, stderr=stderr, env=ENV)


def log_events(data):
    """Every event of the log in <data>, read with `spool log tail --json`."""
    p = run_spool("log", "tail", "--json", "--data", str(data))
    assert p.returncode == 0, f"spool log tail exited {p.returncode}: {p.stderr}"
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def log_verify(data):
    return run_spool("log", "verify", "--data", str(data))


def port_answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


class Appender:
    """Client threads that append unique system.note events over the admin
    socket as fast as the server acknowledges them, until told to stop or
    until the server goes away. Records exactly which appends got 201.

    An error (refused, reset, closed) ends a thread. Errors are expected
    once `server_gone` is set (the caller sets it just before it signals
    the server); any error before that is reported in `unexpected`."""

    def __init__(self, sock_path, tag, threads=4, max_per_thread=5000):
        self.sock_path = sock_path
        self.tag = tag
        self.nthreads = threads
        self.max_per_thread = max_per_thread
        self.stop = threading.Event()
        self.server_gone = threading.Event()
        self.lock = threading.Lock()
        self.acked = []  # (message, sequence)
        self.refused = []  # (message, status, body): answered, not 201
        self.unexpected = []  # errors before server_gone was set
        self.attempted = set()
        self.started = threading.Barrier(threads + 1)
        self._threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(threads)]

    def start(self):
        for t in self._threads:
            t.start()
        self.started.wait(timeout=30)
        return self

    def acked_count(self):
        with self.lock:
            return len(self.acked)

    def join(self, timeout=60.0):
        self.stop.set()
        deadline = time.monotonic() + timeout
        for t in self._threads:
            t.join(max(0.0, deadline - time.monotonic()))
            assert not t.is_alive(), "an appender thread did not finish"

    def _run(self, t):
        self.started.wait(timeout=30)
        conn = None
        try:
            for i in range(self.max_per_thread):
                if self.stop.is_set():
                    break
                msg = f"{self.tag}-t{t}-{i:05d}"
                with self.lock:
                    self.attempted.add(msg)
                try:
                    if conn is None:
                        conn = UnixHTTPConnection(self.sock_path, timeout=30)
                    conn.request("POST", "/admin/log/append",
                                 body=json.dumps({"type": "system.note", "body": {"message": msg}}),
                                 headers={"Content-Type": "application/json"})
                    r = conn.getresponse()
                    body = r.read()
                    if r.getheader("connection", "").lower() == "close":
                        conn.close()
                        conn = None
                except (OSError, http.client.HTTPException) as e:
                    if not self.server_gone.is_set():
                        with self.lock:
                            self.unexpected.append((msg, repr(e)))
                    return
                with self.lock:
                    if r.status == 201:
                        self.acked.append((msg, json.loads(body)["sequence"]))
                    else:
                        self.refused.append((msg, r.status, body))
                if r.status != 201:
                    return
        finally:
            if conn is not None:
                conn.close()


def check_log_holds(data, acked, attempted=None):
    """Asserts the log in <data> is whole and holds every acknowledged append
    at its acknowledged sequence. Returns the events."""
    events = log_events(data)
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(events) + 1)), "sequences are not contiguous from 1"
    by_seq = {e["seq"]: e for e in events}
    missing = [(m, s) for m, s in acked if s not in by_seq or by_seq[s]["body"].get("message") != m]
    assert not missing, f"{len(missing)} acknowledged appends are not in the log at their sequence, e.g. {missing[:5]}"
    assert len({s for _, s in acked}) == len(acked), "two appends were acknowledged with the same sequence"
    if attempted is not None:
        msgs = [e["body"].get("message") for e in events if e["type"] == "system.note"]
        mine = [m for m in msgs if m in attempted]
        assert len(mine) == len(set(mine)), "an append is in the log twice"
    v = log_verify(data)
    assert v.returncode == 0, f"spool log verify failed: {v.stderr}"
    assert v.stdout.startswith(f"ok: {len(events)} events"), v.stdout
    return events


@pytest.fixture
def procs():
    """Processes a test starts itself; any still running at the end are killed."""
    started = []
    yield started
    for p in started:
        if p.poll() is None:
            p.kill()
            p.wait(timeout=30)


@pytest.fixture
def make_server(tmp_path):
    """Factory for extra servers (on any data dir); all are killed at the end."""
    made = []

    def make(data=None, **kw):
        s = Server(data if data is not None else tmp_path / "data", **kw)
        made.append(s)
        return s

    yield make
    for s in made:
        if s.proc is not None:
            s.kill()


@pytest.fixture
def browser():
    """Debian's Chromium, headless, driven by Playwright."""
    from playwright.sync_api import sync_playwright
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path="/usr/bin/chromium",
                              args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            yield b
        finally:
            b.close()
