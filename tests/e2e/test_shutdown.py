"""Orderly shutdown: SIGTERM and SIGINT drain, commit, close the log and exit
0; an acknowledged append is never lost, even when the signal lands in the
middle of a burst."""

import http.client
import json
import os
import signal

import pytest

from conftest import Appender, check_log_holds, log_events, log_verify, port_answers, wait_for


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly(server, data_dir, sig):
    server.start()
    for i in range(10):
        assert server.append("system.note", {"message": f"before-{i}"}) == i + 1
    assert server.stop(sig) == 0
    log = server.log_text()
    name = "SIGTERM" if sig == signal.SIGTERM else "SIGINT"
    assert f"received {name}: draining" in log
    lines = [json.loads(l) for l in log.splitlines() if l.startswith("{")]
    assert lines[-1]["msg"] == "stopped cleanly", log
    assert not any(l["level"] == "error" for l in lines), log
    assert not port_answers(server.port)
    assert not os.path.exists(server.sock_path), "the admin socket is removed on a clean stop"

    v = log_verify(data_dir)
    assert v.returncode == 0, v.stderr
    assert v.stdout.startswith("ok: 10 events")

    # A second start finds everything and goes on from there.
    server.start()
    st = server.wait_caught_up()
    assert st["head_sequence"] == 10 and st["events_by_type"] == {"system.note": 10}
    assert server.append("system.note", {"message": "after"}) == 11
    assert server.stop(sig) == 0
    assert [e["body"]["message"] for e in log_events(data_dir)][-2:] == ["before-9", "after"]


def test_sigterm_while_idle_connection_is_open(server):
    # An idle keep-alive client must not keep the server from stopping.
    server.start()
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("GET", "/healthcheck")
        assert conn.getresponse().read()
        assert server.stop(signal.SIGTERM, timeout=30) == 0
    finally:
        conn.close()
    assert "stopped cleanly" in server.log_text()


def test_sigterm_during_append_burst_keeps_every_acknowledged_append(server, data_dir):
    server.start()
    app = Appender(server.sock_path, "term", threads=6).start()
    wait_for(lambda: app.acked_count() >= 50, what="some appends to be acknowledged")
    app.server_gone.set()
    server.proc.send_signal(signal.SIGTERM)
    rc = server.proc.wait(timeout=60)
    server.stderr.close()
    server.proc = None
    app.join()
    assert rc == 0, server.log_text()
    assert "stopped cleanly" in server.log_text()
    assert not app.unexpected, app.unexpected[:5]
    # Refusals while draining are fine; they must say why.
    for _, status, body in app.refused:
        assert status == 503 and "shutting down" in json.loads(body)["message"], (status, body)

    events = check_log_holds(data_dir, app.acked, app.attempted)
    assert len(app.acked) >= 50
    server.start()
    st = server.wait_caught_up()
    assert st["head_sequence"] == len(events)
    assert sum(st["events_by_type"].values()) == len(events)
