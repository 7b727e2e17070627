"""Health, readiness and status endpoints of the real server."""

from conftest import Server, run_spool


def test_health_endpoints_answer_json(server):
    server.start()
    for path in ("/health-check", "/healthcheck"):
        status, body = server.get_json(path)
        assert status == 200 and body == {"status": "ok"}
    status, body = server.get_json("/ready")
    assert status == 200 and body == {"status": "ready"}


def test_unknown_path_is_404_json(server):
    server.start()
    status, body = server.get_json("/definitely/not/here")
    assert status == 404
    assert body["message"] == "no such path: /definitely/not/here"


def test_status_after_appends(server):
    server.start()
    for i in range(5):
        assert server.append("system.note", {"message": f"n{i}"}) == i + 1
    server.append("system.mark", {"label": "deploy"})
    status, st = server.get_json("/status")
    assert status == 200
    assert st["head_sequence"] == 6
    assert {"name": "counts", "version": 1, "checkpoint": 6, "lag": 0} in st["projections"]
    assert all(p["checkpoint"] == 6 and p["lag"] == 0 for p in st["projections"])
    assert st["events_by_type"] == {"system.mark": 1, "system.note": 5}
    assert sum(st["events_by_day"].values()) == 6
    assert st["ready"] is True
