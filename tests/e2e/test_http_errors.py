"""Malformed and misdirected HTTP requests get a 4xx with a JSON `message`,
and change nothing."""

import json
import socket

import pytest


def as_json(status, body, headers):
    assert headers.get("content-type", "").startswith("application/json"), headers
    doc = json.loads(body)
    assert isinstance(doc.get("message"), str) and doc["message"], doc
    return status, doc


def raw_request(port, raw):
    """Sends bytes as they are (http.client would refuse a malformed path)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(raw)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            b = s.recv(65536)
            if not b:
                break
            chunks.append(b)
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    lines = head.decode().split("\r\n")
    status = int(lines[0].split()[1])
    headers = {k.strip().lower(): v.strip() for k, v in (l.split(":", 1) for l in lines[1:])}
    return status, body, headers


def test_unknown_path_is_404_json(server):
    server.start()
    status, doc = as_json(*server.request("GET", "/no/such/thing"))
    assert status == 404 and "/no/such/thing" in doc["message"]


@pytest.mark.parametrize("method,path", [("POST", "/status"), ("DELETE", "/healthcheck"), ("PUT", "/ready"),
                                         ("POST", "/metrics")])
def test_wrong_method_is_405_json(server, method, path):
    server.start()
    status, doc = as_json(*server.request(method, path, body="{}"))
    assert status == 405, doc
    assert method in doc["message"] and path in doc["message"]


def test_head_on_a_get_route_is_allowed(server):
    server.start()
    status, body, _ = server.request("HEAD", "/status")
    assert status == 200 and body == b""


@pytest.mark.parametrize("path", ["/status%zz", "/status%", "/status%4", "/%g0status", "/status?q=%zz"])
def test_bad_percent_escape_is_400_json(server, path):
    server.start()
    status, doc = as_json(*raw_request(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
    assert status == 400, doc
    assert doc["message"] == "malformed request path"


def test_percent_escape_of_a_control_character_is_400_json(server):
    # http/server.c: a usable path has "no percent-escapes that decode to
    # control characters"; such a path is refused, not looked up.
    server.start()
    got = {}
    for path in ["/status%00", "/status%0a", "/status%1B", "/status%7f"]:
        status, doc = as_json(*raw_request(server.port, f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode()))
        got[path] = (status, doc["message"])
    assert all(v == (400, "malformed request path") for v in got.values()), got


@pytest.mark.parametrize("method,path", [("POST", "/admin/log/append"), ("GET", "/admin/views/dump")])
def test_admin_routes_do_not_exist_on_tcp(server, method, path):
    server.start()
    body = {"type": "system.note", "body": {"message": "over tcp"}} if method == "POST" else None
    status, doc = as_json(*server.request(method, path, body=body))
    assert status == 404, doc
    assert server.status()["head_sequence"] == 0, "an admin append over TCP reached the log"


BAD_BODIES = [
    ("not json", "invalid JSON"),
    ("", "invalid JSON"),
    ("[]", "request must be a JSON object"),
    ('{"type": 1, "body": {}}', "type: expected a string"),
    ('{"type": "system.note"}', "body: required field is missing"),
    ('{"type": "system.note", "body": {"message": "x"}, "more": 1}', "only the fields type and body are allowed"),
    ('{"type": "system.nope", "body": {"message": "x"}}', 'unknown event type "system.nope"'),
    ('{"type": "system.note", "body": {}}', "body.message: required field is missing"),
    ('{"type": "system.note", "body": {"message": 5}}', "body.message: expected a string"),
    ('{"type": "system.note", "body": {"message": "' + "x" * 5000 + '"}}', "body.message: longer than 4096 bytes"),
    ('{"type": "system.note", "body": {"message": "a", "message": "b"}}', "duplicate"),
]


def test_bad_admin_body_is_400_json_and_appends_nothing(server):
    server.start()
    assert server.append("system.note", {"message": "good"}) == 1
    for raw, reason in BAD_BODIES:
        status, doc = as_json(*server.request("POST", "/admin/log/append", body=raw, admin=True,
                                              headers={"Content-Type": "application/json"}))
        assert status == 400, (raw[:80], status, doc)
        assert reason in doc["message"], (raw[:80], doc)
    st = server.status()
    assert st["head_sequence"] == 1 and st["events_by_type"] == {"system.note": 1}
    assert server.append("system.note", {"message": "still good"}) == 2


def test_wrong_method_on_admin_socket_is_405(server):
    server.start()
    status, doc = as_json(*server.request("GET", "/admin/log/append", admin=True))
    assert status == 405, doc
    status, doc = as_json(*server.request("GET", "/nope", admin=True))
    assert status == 404, doc
    assert server.status()["head_sequence"] == 0


def test_server_keeps_serving_after_bad_requests(server):
    server.start()
    for raw in [b"GARBAGE\r\n\r\n", b"GET /status%zz HTTP/1.1\r\nHost: x\r\n\r\n", b"\x00\x01\x02\r\n\r\n"]:
        with socket.create_connection(("127.0.0.1", server.port), timeout=30) as s:
            s.sendall(raw)
            s.shutdown(socket.SHUT_WR)
            while s.recv(65536):
                pass
    assert server.get("/healthcheck")[0] == 200
    assert server.proc.poll() is None
