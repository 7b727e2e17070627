"""`spool agent` as a process: usage errors, refusing to run without a
sandbox, running a task from a protocol server, --once, and SIGTERM
(drain, then kill after --grace and finish as infrastructure_fail).

The server here is a small stand-in for the server side of
docs/agent-protocol.md (plain HTTP/1.1 on a unix socket), so the agent's
process behaviour is tested apart from `spool serve`; the unit tests in
tests/agent/ cover the protocol client in depth."""

import json
import os
import shutil
import signal
import socketserver
import subprocess
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from conftest import ENV, SPOOL, run_spool, wait_for

TOKEN = "agent-token"


class ProtocolServer(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True

    def __init__(self, path):
        self.lock = threading.Condition()
        self.tasks = []
        self.events = []
        self.finishes = []
        self.outputs = 0
        super().__init__(path, Handler)

    def add_task(self, task):
        with self.lock:
            self.tasks.append(task)
            self.lock.notify_all()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def address_string(self):
        return "agent"

    def log_message(self, *args):
        pass

    def reply(self, status, body=None):
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        srv = self.server
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.headers.get("Authorization") != f"Bearer {TOKEN}":
            return self.reply(401, {"message": "bad token"})
        path = self.path
        if path == "/api/agent/v1/register":
            return self.reply(201, {"agent_id": "a1", "heartbeat_ms": 1000, "lease_timeout_ms": 30000})
        if path.startswith("/api/agent/v1/claim"):
            with srv.lock:
                srv.lock.wait_for(lambda: srv.tasks, timeout=0.5)
                if not srv.tasks:
                    return self.reply(204)
                task = srv.tasks.pop(0)
            return self.reply(200, {"task": task})
        if path == "/api/agent/v1/heartbeat":
            return self.reply(200, {"cancel": []})
        if path.endswith("/events"):
            with srv.lock:
                srv.events += json.loads(body)["events"]
                srv.lock.notify_all()
            return self.reply(200, {"cancel": False})
        if "/output?" in path:
            with srv.lock:
                srv.outputs += 1
            return self.reply(200, {"cancel": False})
        if path.endswith("/finish"):
            with srv.lock:
                srv.finishes.append(json.loads(body))
                srv.lock.notify_all()
            return self.reply(200, {})
        return self.reply(404, {"message": "no route"})


@pytest.fixture
def server(tmp_path):
    sock = str(tmp_path / "agent.sock")
    srv = ProtocolServer(sock)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def task(task_id, command):
    return {"task_id": task_id, "lease": "lease-" + task_id, "job_id": "j", "job_number": 1, "job_name": "build",
            "environment": {"CI": "true"}, "working_directory": "~/project", "limits": {"job_timeout_s": 120},
            "steps": [{"id": 101, "type": "run", "name": "go", "command": command}]}


def start_agent(tmp_path, server, *extra):
    args = [SPOOL, "agent", "--server", "unix:" + server.server_address, "--work-dir", str(tmp_path / "work"),
            "--name", "e2e", *extra]
    env = dict(ENV, SPOOL_AGENT_TOKEN=TOKEN)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def test_agent_help_and_usage_errors():
    p = run_spool("agent", "--help")
    assert p.returncode == 0 and "usage: spool agent" in p.stdout and "--no-sandbox" in p.stdout
    p = run_spool("agent", "--token", "x")
    assert p.returncode == 2 and "--server is required" in p.stderr
    p = run_spool("agent", "--server", "unix:/nope", "--token", "x", "--slots", "0")
    assert p.returncode == 2 and "--slots" in p.stderr


def test_agent_refuses_to_run_without_a_sandbox(tmp_path):
    env = dict(ENV, PATH="/nonexistent")
    p = subprocess.run([SPOOL, "agent", "--server", "unix:/nope", "--token", "x", "--work-dir", str(tmp_path / "w")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 1
    assert "bubblewrap" in p.stderr and "--no-sandbox" in p.stderr


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_agent_once_runs_a_task_and_exits(tmp_path, server):
    server.add_task(task("t1", "echo hello from the agent"))
    p = start_agent(tmp_path, server, "--once")
    try:
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 0, p.stderr.read()
    assert [f["status"] for f in server.finishes] == ["success"]
    steps = [(e["type"], e["step"]) for e in server.events]
    assert steps == [("step_started", 0), ("step_finished", 0), ("step_started", 99), ("step_finished", 99),
                     ("step_started", 101), ("step_finished", 101)]
    assert server.outputs >= 3
    assert not os.path.exists(tmp_path / "work" / "t1")


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_agent_sigterm_drains_then_fails_running_task(tmp_path, server):
    p = start_agent(tmp_path, server, "--grace", "1")
    try:
        server.add_task(task("t2", "sleep 1000"))
        wait_for(lambda: any(e["type"] == "step_started" and e["step"] == 101 for e in list(server.events)),
                 what="step 101 to start")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read()
    assert rc == 0, err
    assert [f["status"] for f in server.finishes] == ["infrastructure_fail"]
    assert "agent stopped" in server.finishes[0]["message"]
    assert any(e["type"] == "step_finished" and e["step"] == 101 and e["status"] == "canceled" for e in server.events)
    assert "grace period over" in err


def test_agent_with_a_refused_token_exits_1(tmp_path, server):
    args = [SPOOL, "agent", "--server", "unix:" + server.server_address, "--token", "wrong", "--no-sandbox",
            "--work-dir", str(tmp_path / "work")]
    p = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=60)
    assert p.returncode == 1
    assert "refused" in p.stderr
