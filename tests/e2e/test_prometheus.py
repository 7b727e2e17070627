"""A real Prometheus scrapes /metrics: the exposition format must parse and
the values must match the server's own view."""

import json
import shutil
import subprocess
import urllib.parse
import urllib.request

import pytest

from conftest import free_port, wait_for

PROMETHEUS = shutil.which("prometheus")


def query(port, expr):
    url = f"http://127.0.0.1:{port}/api/v1/query?query={urllib.parse.quote(expr)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            body = json.load(r)
    except OSError:
        return None
    result = body.get("data", {}).get("result", [])
    return result


@pytest.fixture
def prometheus(tmp_path):
    procs = []

    def start(target_port):
        port = free_port()
        conf = tmp_path / "prometheus.yml"
        conf.write_text(
            "global:\n  scrape_interval: 200ms\n  scrape_timeout: 150ms\n"
            "scrape_configs:\n  - job_name: spool\n    static_configs:\n"
            f"      - targets: ['127.0.0.1:{target_port}']\n")
        log = open(tmp_path / "prometheus.log", "wb")
        p = subprocess.Popen([PROMETHEUS, f"--config.file={conf}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                              f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=log)
        procs.append((p, log))
        return port

    yield start
    for p, log in procs:
        p.terminate()
        p.wait(timeout=30)
        log.close()


def test_prometheus_scrapes_metrics(server, prometheus):
    assert PROMETHEUS, "prometheus is missing: tools/dev/bootstrap installs it"
    server.start()
    for i in range(7):
        server.append("system.note", {"message": f"scraped {i}"})
    port = prometheus(server.port)

    def head_seen():
        r = query(port, "spool_log_head_sequence")
        return r and r[0]["value"][1] == "7"

    wait_for(head_seen, timeout=60, what="Prometheus to scrape spool_log_head_sequence = 7")
    up = query(port, 'up{job="spool"}')
    assert up and up[0]["value"][1] == "1"
    by_type = query(port, 'spool_log_events_by_type_total{type="system.note"}')
    assert by_type and by_type[0]["value"][1] == "7"
    hist = query(port, "spool_log_commit_duration_seconds_count")
    assert hist and int(hist[0]["value"][1]) >= 1
    ok = query(port, 'spool_http_requests_total{code="201"}')
    assert ok and ok[0]["value"][1] == "7"
    depth = query(port, 'spool_run_queue_depth{resource_class="docker:small"}')
    assert depth and depth[0]["value"][1] == "0"
    lat = query(port, "spool_run_queue_latency_seconds_count")
    assert lat and lat[0]["value"][1] == "0"
