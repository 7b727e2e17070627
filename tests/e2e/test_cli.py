"""The command line: help and usage errors, `spool log append` (direct and
through a running server), `spool log tail --from` and `--follow`."""

import json
import queue
import signal
import subprocess
import threading
import time

import pytest

from conftest import log_events, log_verify, run_spool, spool_popen, wait_for

# How long a command that should exit at once may take before we call it
# hung. Generous for the sanitized binary on a busy machine.
QUICK = 10

HELP = [
    (["--help"], "usage: spool <command>"),
    (["serve", "--help"], "usage: spool serve"),
    (["log", "--help"], "usage: spool log <command>"),
    (["log", "tail", "--help"], "usage: spool log tail"),
    (["log", "verify", "--help"], "usage: spool log verify"),
    (["log", "append", "--help"], "usage: spool log append"),
]


@pytest.mark.parametrize("args,usage", HELP, ids=[" ".join(a) for a, _ in HELP])
def test_help_exits_0_and_prints_usage(args, usage):
    p = run_spool(*args, timeout=QUICK)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith(usage), p.stdout
    assert "--data" in p.stdout or args == ["--help"]
    assert p.stderr == ""


@pytest.mark.parametrize("args", [[], ["bogus"], ["log"], ["log", "bogus"]], ids=["none", "bogus", "log", "log bogus"])
def test_unknown_or_missing_command_exits_2(args):
    p = run_spool(*args, timeout=QUICK)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert "usage: spool" in p.stderr
    assert p.stdout == ""


UNKNOWN_FLAGS = [
    ["serve", "--bogus"],
    ["log", "tail", "--bogus"],
    ["log", "verify", "--bogus"],
    ["log", "append", "--bogus", "system.note", "{}"],
]


def test_unknown_flag_exits_2(tmp_path):
    # Started together so a hang costs one deadline, not one per command.
    data = tmp_path / "data"
    started = [(args, spool_popen(*args, "--data", str(data))) for args in UNKNOWN_FLAGS]
    results = []
    deadline = time.monotonic() + QUICK
    for args, p in started:
        try:
            out, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
            results.append((args, p.returncode, err.decode()))
        except subprocess.TimeoutExpired:
            p.kill()
            _, err = p.communicate()
            results.append((args, "hung (killed after the deadline)", err.decode()))
    bad = [(a, rc) for a, rc, _ in results if rc != 2]
    assert not bad, f"expected exit 2 for an unknown flag, got {bad}"
    for args, _, err in results:
        assert "--bogus" in err and "usage: spool" in err, (args, err)
    assert not data.exists(), "a usage error must not touch the data directory"


WRONG_USAGE = {
    "append-no-json": ["log", "append", "system.note"],
    "append-no-args": ["log", "append"],
    "tail-extra": ["log", "tail", "extra"],
    "verify-extra": ["log", "verify", "extra"],
    "from-0": ["log", "tail", "--from", "0"],
    "from-x": ["log", "tail", "--from", "x"],
    "serve-extra": ["serve", "extra"],
}


@pytest.mark.parametrize("args", WRONG_USAGE.values(), ids=WRONG_USAGE.keys())
def test_wrong_usage_exits_2(args, tmp_path):
    data = tmp_path / "data"
    command = args[:2] if args[0] == "log" else args[:1]  # --data goes right after the command
    p = run_spool(*command, "--data", str(data), *args[len(command):], timeout=QUICK)
    assert p.returncode == 2, (p.returncode, p.stderr)
    assert p.stderr.strip(), "a usage error must say what is wrong"
    assert not (data / "log").exists()


def append(data, type_, body):
    raw = body if isinstance(body, str) else json.dumps(body)
    return run_spool("log", "append", "--data", str(data), type_, raw, timeout=60)


INVALID = [
    ("system.note", '{"message": "x"', "invalid JSON"),
    ("system.note", "[1, 2]", "body must be a JSON object"),
    ("system.nope", '{"message": "x"}', 'unknown event type "system.nope"'),
    ("system.note", "{}", "body.message: required field is missing"),
    ("system.note", '{"message": 7}', "body.message: expected a string"),
    ("system.note", '{"message": "x", "extra": 1}', "body.extra: unknown field"),
    ("system.mark", '{"detail": {}}', "body.label: required field is missing"),
    ("system.mark", '{"label": "a", "detail": "not an object"}', "body.detail: expected an object"),
]


def test_log_append_rejects_invalid_input_and_appends_nothing(data_dir):
    first = append(data_dir, "system.note", {"message": "before"})
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout) == {"sequence": 1}
    for type_, body, reason in INVALID:
        p = append(data_dir, type_, body)
        assert p.returncode == 1, (type_, body, p.returncode, p.stderr)
        assert p.stderr.startswith("spool log append: ") and reason in p.stderr, (type_, body, p.stderr)
        assert p.stdout == ""
    events = log_events(data_dir)
    assert [e["body"] for e in events] == [{"message": "before"}], "an invalid append changed the log"
    assert log_verify(data_dir).stdout.startswith("ok: 1 events")


def test_log_append_without_server_writes_the_log_directly(data_dir):
    p = append(data_dir, "system.note", {"message": "direct one"})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"sequence": 1}
    p = append(data_dir, "system.mark", {"label": "release", "detail": {"tag": "v1", "n": [1, 2]}})
    assert json.loads(p.stdout) == {"sequence": 2}
    assert not (data_dir / "spool.sock").exists()

    events = log_events(data_dir)
    assert [(e["seq"], e["type"], e["body"]) for e in events] == [
        (1, "system.note", {"message": "direct one"}),
        (2, "system.mark", {"label": "release", "detail": {"tag": "v1", "n": [1, 2]}}),
    ]
    for e in events:
        assert e["actor"] == "cli" and e["schema"] == 1 and e["redacted"] is False
        assert len(e["request_id"]) == 36
    assert events[0]["time_ns"] <= events[1]["time_ns"]
    assert events[0]["request_id"] != events[1]["request_id"]

    # Plain (non-JSON) tail shows the same events, one per line.
    p = run_spool("log", "tail", "--data", str(data_dir))
    assert p.returncode == 0
    lines = p.stdout.splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("1 ") and "system.note" in lines[0] and '"direct one"' in lines[0]
    assert lines[1].startswith("2 ") and "system.mark" in lines[1]


def test_log_append_into_an_unusable_data_dir_exits_1(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a directory")
    data = blocker / "data"
    try:
        p = run_spool("log", "append", "--data", str(data), "system.note", '{"message": "x"}', timeout=QUICK)
    except subprocess.TimeoutExpired:
        raise AssertionError(f"spool log append did not exit within {QUICK}s on an unusable data dir")
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert p.stderr.startswith("spool log append: cannot create ") and "Not a directory" in p.stderr, p.stderr
    assert p.stdout == ""


def test_log_append_accepts_data_after_the_arguments(data_dir):
    # `spool log append TYPE JSON --data DIR`, as the other commands (and
    # this suite's run_spool) put it; `spool serve` accepts options anywhere.
    p = run_spool("log", "append", "system.note", '{"message": "trailing data flag"}', data=data_dir, timeout=60)
    assert p.returncode == 0, (p.returncode, p.stderr)
    assert json.loads(p.stdout) == {"sequence": 1}
    assert [e["body"]["message"] for e in log_events(data_dir)] == ["trailing data flag"]


def metric(server, name):
    s, b = server.get("/metrics")
    assert s == 200
    for line in b.decode().splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def test_log_append_with_server_goes_through_the_admin_socket(server, data_dir):
    server.start()
    server.append("system.note", {"message": "from the socket"})
    created = metric(server, 'spool_http_requests_total{code="201"}')

    p = append(data_dir, "system.mark", {"label": "via-cli"})
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout) == {"sequence": 2}
    # Read your writes: the views show it as soon as the command returns.
    st = server.status()
    assert st["head_sequence"] == 2
    assert st["events_by_type"] == {"system.mark": 1, "system.note": 1}
    assert st["projections"][0]["lag"] == 0
    # It went through the server's HTTP front-end, not around it.
    assert metric(server, 'spool_http_requests_total{code="201"}') == created + 1

    # Validation happens before the socket too: nothing reaches the log.
    p = append(data_dir, "system.note", {"message": 1})
    assert p.returncode == 1 and "body.message: expected a string" in p.stderr
    assert server.status()["head_sequence"] == 2

    events = log_events(data_dir)  # a reader works beside the running server
    assert [(e["seq"], e["type"]) for e in events] == [(1, "system.note"), (2, "system.mark")]
    assert events[1]["body"] == {"label": "via-cli"}


def test_log_tail_from(data_dir):
    for i in range(1, 6):
        assert append(data_dir, "system.note", {"message": f"m{i}"}).returncode == 0
    p = run_spool("log", "tail", "--json", "--from", "3", "--data", str(data_dir))
    assert p.returncode == 0
    assert [json.loads(l)["seq"] for l in p.stdout.splitlines()] == [3, 4, 5]
    assert [json.loads(l)["body"]["message"] for l in p.stdout.splitlines()] == ["m3", "m4", "m5"]
    p = run_spool("log", "tail", "--json", "--from", "5", "--data", str(data_dir))
    assert [json.loads(l)["seq"] for l in p.stdout.splitlines()] == [5]
    p = run_spool("log", "tail", "--json", "--from", "6", "--data", str(data_dir))
    assert p.returncode == 0 and p.stdout == ""


class LineReader:
    """Collects a process's stdout lines on a thread, so the test can poll."""

    def __init__(self, proc):
        self.lines = []
        self._q = queue.Queue()
        self._t = threading.Thread(target=self._run, args=(proc.stdout,), daemon=True)
        self._t.start()

    def _run(self, f):
        for line in iter(f.readline, b""):
            self._q.put(line.decode())

    def poll(self):
        while True:
            try:
                self.lines.append(self._q.get_nowait())
            except queue.Empty:
                return self.lines


def test_log_tail_follow(data_dir, make_server, procs):
    assert append(data_dir, "system.note", {"message": "follow-1"}).returncode == 0
    tail = spool_popen("log", "tail", "--follow", "--json", "--data", str(data_dir))
    procs.append(tail)
    out = LineReader(tail)

    def seen(msg):
        return any(json.loads(l)["body"].get("message") == msg for l in out.poll())

    wait_for(lambda: seen("follow-1"), what="tail --follow to print the existing event")
    # A direct append (no server) wakes it.
    assert append(data_dir, "system.note", {"message": "follow-2"}).returncode == 0
    wait_for(lambda: seen("follow-2"), what="tail --follow to print a direct append")
    # So does an append through a running server.
    server = make_server(data_dir).start()
    server.append("system.mark", {"label": "follow-3"})
    wait_for(lambda: any(json.loads(l)["body"].get("label") == "follow-3" for l in out.poll()),
             what="tail --follow to print an append made through the server")
    assert tail.poll() is None, "tail --follow exited on its own"

    tail.send_signal(signal.SIGINT)
    try:
        rc = tail.wait(timeout=QUICK)
    except subprocess.TimeoutExpired:
        raise AssertionError("tail --follow did not exit after SIGINT")
    assert rc == 0, tail.stderr.read().decode()
    lines = [json.loads(l) for l in out.poll()]
    assert [e["seq"] for e in lines] == [1, 2, 3], "each event printed exactly once, in order"
