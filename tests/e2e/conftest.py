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
    """A running `spool serve`."""

    def __init__(self, data):
        self.data = str(data)
        self.port = free_port()
        self.proc = None
        self.stderr_path = os.path.join(self.data + ".stderr")

    @property
    def sock_path(self):
        return os.path.join(self.data, "spool.sock")

    def start(self, wait_ready=True):
        self.stderr = open(self.stderr_path, "ab")
        self.proc = subprocess.Popen(
            [SPOOL, "serve", "--data", self.data, "--listen", f"127.0.0.1:{self.port}"],
            stdout=subprocess.DEVNULL, stderr=self.stderr, env=ENV)
        wait_for(lambda: self._answers() or self.proc.poll() is not None, what="server to listen")
        if self.proc.poll() is not None:
            raise AssertionError(f"spool serve exited {self.proc.returncode}: {self.log_text()}")
        if wait_ready:
            wait_for(lambda: self.get("/ready")[0] == 200, what="/ready")
        return self

    def _answers(self):
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False

    def log_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def request(self, method, path, body=None, admin=False, headers=None):
        conn = UnixHTTPConnection(self.sock_path) if admin else http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
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


@pytest.fixture
def data_dir(tmp_path):
    return tmp_path / "data"


@pytest.fixture
def server(data_dir):
    s = Server(data_dir)
    yield s
    if s.proc is not None:
        s.kill()
