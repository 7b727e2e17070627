"""The read API and the web UI against the real binary: a git repository
with a config, a project, an API token and pipelines triggered over the
API; the local agents run the jobs. Checked: CircleCI's v2 shapes for
pipelines, workflows and jobs, paging, the v1.1 build object with its
steps and output, the raw output, 401/404/400 answers, the live output
stream (joined in the middle of a job: every line exactly once, then
`end`), and the web UI in headless Chromium while a job runs.

Jobs here do not use `checkout` (the sandbox gives jobs a private /tmp,
where pytest keeps the repositories). A job that must pause waits for a
gate file under /var/tmp, which the sandbox shows read-only: the test
creates the file when it is ready, and every wait on either side is a
condition with a deadline."""

import http.client
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import ROOT, Server, wait_for

CONFIG = """\
version: 2.1
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    resource_class: small
    steps:
      - run:
          name: Say hello
          command: |
            echo "hello from $CIRCLE_JOB"
            printf '\\033[31mred\\033[0m plain\\n'
            echo "to stderr" >&2
  test:
    docker: [{image: cimg/base:stable}]
    steps:
      - run: {name: unit, command: "echo testing; exit ${FAIL_WITH:-0}"}
  after:
    docker: [{image: cimg/base:stable}]
    steps: [{run: echo after}]
workflows:
  main:
    jobs:
      - build
      - test: {requires: [build]}
      - after: {requires: [test]}
"""

GATED = """\
version: 2.1
jobs:
  count:
    docker: [{image: cimg/base:stable}]
    steps:
      - run:
          name: Count
          command: |
            for i in $(seq 1 50); do echo "line $i"; done
            n=0
            while [ ! -e GATE ]; do
              n=$((n+1)); if [ $n -gt 2400 ]; then echo "no gate" >&2; exit 3; fi
              sleep 0.05
            done
            for i in $(seq 51 100); do echo "line $i"; done
workflows:
  main:
    jobs: [count]
"""


def git(cwd, *args):
    env = dict(os.environ, GIT_AUTHOR_NAME="Ada", GIT_AUTHOR_EMAIL="ada@example.com", GIT_COMMITTER_NAME="Ada",
               GIT_COMMITTER_EMAIL="ada@example.com")
    p = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, env=env)
    assert p.returncode == 0, f"git {args}: {p.stderr}"
    return p.stdout.strip()


def make_repo(path, config, message="first commit"):
    os.makedirs(os.path.join(path, ".circleci"))
    git(path, "init", "-q", "-b", "main")
    with open(os.path.join(path, ".circleci", "config.yml"), "w") as f:
        f.write(config)
    git(path, "add", "-A")
    git(path, "commit", "-q", "-m", message)
    return "file://" + str(path)


class Api:
    def __init__(self, server, token):
        self.server = server
        self.token = token

    def call(self, path, method="GET", body=None, token="default"):
        tok = self.token if token == "default" else token
        headers = {"Circle-Token": tok} if tok else {}
        s, b, h = self.server.request(method, path, body, headers=headers)
        if b and h.get("content-type", "").startswith("application/json"):
            return s, json.loads(b)
        return s, b

    def get(self, path, **kw):
        s, b = self.call(path, **kw)
        assert s == 200, (path, s, b)
        return b

    def trigger(self, branch="main"):
        s, b = self.call("/api/v2/project/gh/acme/app/pipeline", "POST", {"branch": branch})
        assert s == 201, b
        return b

    def job(self, number):
        return self.get(f"/api/v2/project/gh/acme/app/job/{number}")

    def wait_job(self, number, statuses, timeout=90):
        def ready():
            s, j = self.call(f"/api/v2/project/gh/acme/app/job/{number}")
            return j if s == 200 and j["status"] in statuses else None
        return wait_for(ready, timeout=timeout, what=f"job {number} to be {statuses}")


@pytest.fixture
def agents_server(tmp_path):
    """A server with two local agent slots, killed at the end."""
    s = Server(tmp_path / "data", slots=2)
    yield s
    if s.proc is not None:
        s.kill()


def start_ci(server, tmp_path, config):
    url = make_repo(tmp_path / "repo", config)
    server.start()
    s, b, _ = server.request("POST", "/admin/tokens", {"name": "tester", "role": "user"}, admin=True)
    assert s == 201, b
    token = json.loads(b)["token"]
    s, b, _ = server.request("POST", "/api/v2/project", {"slug": "gh/acme/app", "vcs_url": url}, admin=True)
    assert s == 201, b
    return Api(server, token)


def no_private_fields(doc):
    assert not [k for k in doc if k.startswith("_")], doc


FINAL = {"success", "failed", "canceled", "timedout", "infrastructure_fail", "not_run"}


# ---- shapes ----

def test_pipeline_workflow_and_job_shapes(agents_server, tmp_path):
    server = agents_server
    api = start_ci(server, tmp_path, CONFIG)
    trig = api.trigger()
    api.wait_job(3, FINAL)

    page = api.get("/api/v2/project/gh/acme/app/pipeline")
    assert set(page) == {"items", "next_page_token"} and page["next_page_token"] is None
    assert [p["number"] for p in page["items"]] == [1]
    p = page["items"][0]
    no_private_fields(p)
    assert p["id"] == trig["id"] and p["project_slug"] == "gh/acme/app" and p["state"] == "created"
    for k in ("id", "number", "project_slug", "state", "created_at", "errors", "trigger", "vcs"):
        assert k in p, k
    assert p["trigger"]["type"] == "api" and "received_at" in p["trigger"] and "login" in p["trigger"]["actor"]
    assert p["vcs"]["branch"] == "main" and len(p["vcs"]["revision"]) == 40
    assert p["vcs"]["commit"]["subject"] == "first commit"
    assert api.get(f"/api/v2/pipeline/{p['id']}") == p
    assert api.get("/api/v2/project/gh/acme/app/pipeline/1") == p
    assert api.get("/api/v2/project/github/acme/app/pipeline/1") == p

    cfg = api.get(f"/api/v2/pipeline/{p['id']}/config")
    assert set(cfg) == {"source", "compiled", "setup-config", "compiled-setup-config"}
    assert cfg["source"] == CONFIG and cfg["compiled"].startswith("version: 2")

    wfs = api.get(f"/api/v2/pipeline/{p['id']}/workflow")
    assert wfs["next_page_token"] is None and len(wfs["items"]) == 1
    wf = wfs["items"][0]
    no_private_fields(wf)
    assert wf["name"] == "main" and wf["status"] == "success" and wf["pipeline_id"] == p["id"]
    assert wf["pipeline_number"] == 1 and wf["project_slug"] == "gh/acme/app" and wf["stopped_at"]
    assert api.get(f"/api/v2/workflow/{wf['id']}") == wf

    jobs = api.get(f"/api/v2/workflow/{wf['id']}/job")
    assert jobs["next_page_token"] is None
    items = jobs["items"]
    assert [j["name"] for j in items] == ["build", "test", "after"]
    assert [j["job_number"] for j in items] == [1, 2, 3]
    for j in items:
        no_private_fields(j)
        assert j["type"] == "build" and j["status"] == "success" and j["project_slug"] == "gh/acme/app"
        assert j["started_at"] and j["stopped_at"]
    assert items[0]["dependencies"] == [] and items[1]["dependencies"] == [items[0]["id"]]
    assert items[2]["dependencies"] == [items[1]["id"]]

    d = api.job(1)
    no_private_fields(d)
    assert d["number"] == 1 and d["name"] == "build" and d["status"] == "success"
    assert d["web_url"] == f"http://127.0.0.1:{server.port}/ui/gh/acme/app/jobs/1"
    assert d["project"]["slug"] == "gh/acme/app" and d["project"]["name"] == "app" and d["project"]["id"]
    assert d["project"]["external_url"].startswith("file://")
    assert d["organization"] == {"name": "acme"}
    assert d["pipeline"] == {"id": p["id"]}
    assert d["latest_workflow"] == {"id": wf["id"], "name": "main"}
    assert d["parallelism"] == 1 and d["parallel_runs"] == [{"index": 0, "status": "success"}]
    assert d["executor"] == {"resource_class": "small", "type": "docker"}
    assert d["contexts"] == [] and d["messages"] == []
    assert d["created_at"] and d["queued_at"] and d["started_at"] and d["stopped_at"]
    assert isinstance(d["duration"], int)


def test_v11_build_steps_and_output(agents_server, tmp_path):
    server = agents_server
    api = start_ci(server, tmp_path, CONFIG)
    api.trigger()
    api.wait_job(1, FINAL)
    b = api.get("/api/v1.1/project/gh/acme/app/1")
    assert b["build_num"] == 1 and b["build_url"].endswith("/gh/acme/app/1")
    assert b["vcs_type"] == "github" and b["username"] == "acme" and b["reponame"] == "app"
    assert b["branch"] == "main" and len(b["vcs_revision"]) == 40 and b["vcs_tag"] is None
    assert b["subject"] == "first commit" and b["why"] == "api"
    assert b["lifecycle"] == "finished" and b["outcome"] == "success" and b["status"] == "success"
    assert b["failed"] is False and b["canceled"] is False and b["timedout"] is False
    assert b["infrastructure_fail"] is False and b["parallel"] == 1 and b["platform"] == "2.0"
    assert b["queued_at"] and b["start_time"] and b["stop_time"] and isinstance(b["build_time_millis"], int)
    w = b["workflows"]
    assert w["workflow_name"] == "main" and w["job_name"] == "build" and w["upstream_job_ids"] == []
    assert isinstance(b["messages"], list)
    ids = [s["actions"][0]["step"] for s in b["steps"]]
    assert ids == [0, 99, 101], ids
    assert [s["name"] for s in b["steps"]] == ["Spin up environment", "Preparing environment variables", "Say hello"]
    keys = {"index", "step", "name", "bash_command", "status", "exit_code", "failed", "canceled", "timedout",
            "infrastructure_fail", "start_time", "end_time", "run_time_millis", "background", "insignificant",
            "parallel", "has_output", "output_url", "type", "allocation_id", "truncated"}
    for s in b["steps"]:
        a = s["actions"][0]
        assert keys <= set(a), keys - set(a)
        assert a["index"] == 0 and a["status"] == "success" and a["type"] == "test" and a["truncated"] is False
    say = b["steps"][2]["actions"][0]
    assert say["bash_command"].startswith("#!/bin/bash -eo pipefail\n") and say["exit_code"] == 0
    assert say["has_output"] is True

    # output_url needs the same token (it is not a pre-signed URL)
    url = say["output_url"]
    prefix = f"http://127.0.0.1:{server.port}"
    assert url == prefix + "/api/v1.1/project/gh/acme/app/1/output/101/0"
    s, _ = api.call(url[len(prefix):], token=None)
    assert s == 401
    out = api.get(url[len(prefix):])
    text = "".join(e["message"] for e in out if e["type"] == "out")
    assert text == "hello from build\n\x1b[31mred\x1b[0m plain\n", out
    assert "".join(e["message"] for e in out if e["type"] == "err") == "to stderr\n"
    assert all(e["time"] for e in out)

    s, raw = api.call("/api/private/output/raw/gh/acme/app/1/output/0/101")
    assert s == 200 and raw == b"hello from build\n\x1b[31mred\x1b[0m plain\n"
    s, raw = api.call("/api/private/output/raw/gh/acme/app/1/error/0/101")
    assert s == 200 and raw == b"to stderr\n"
    s, raw = api.call("/api/private/output/raw/gh/acme/app/1/error/0/99")
    assert s == 204 and raw == b""


def test_failed_job_statuses(agents_server, tmp_path):
    server = agents_server
    api = start_ci(server, tmp_path, CONFIG.replace("${FAIL_WITH:-0}", "3"))
    api.trigger()
    api.wait_job(2, {"failed"})
    after = api.wait_job(3, {"not_run"})
    assert after["stopped_at"]
    p = api.get("/api/v2/project/gh/acme/app/pipeline/1")
    wf = wait_for(lambda: (lambda w: w if w["status"] == "failed" else None)(
        api.get(f"/api/v2/pipeline/{p['id']}/workflow")["items"][0]), what="workflow failed")
    assert wf["stopped_at"]
    b = api.get("/api/v1.1/project/gh/acme/app/2")
    assert b["status"] == "failed" and b["outcome"] == "failed" and b["failed"] is True
    unit = b["steps"][-1]["actions"][0]
    assert unit["name"] == "unit" and unit["status"] == "failed" and unit["exit_code"] == 3 and unit["failed"] is True
    b3 = api.get("/api/v1.1/project/gh/acme/app/3")
    assert b3["lifecycle"] == "not_run" and b3["status"] == "not_run" and b3["steps"] == []


# ---- paging, auth and errors ----

def test_paging_branch_filter_and_errors(agents_server, tmp_path):
    server = agents_server
    api = start_ci(server, tmp_path, CONFIG)
    # Pipelines of a branch the repository does not have end "errored"
    # at once (no jobs), which keeps this test quick.
    for _ in range(21):
        api.trigger("ghost")
    api.trigger("other")
    wait_for(lambda: all(p["state"] == "errored" for p in
                         api.get("/api/v2/project/gh/acme/app/pipeline")["items"]), what="pipelines errored")
    first = api.get("/api/v2/project/gh/acme/app/pipeline")
    assert len(first["items"]) == 20 and first["next_page_token"]
    assert [p["number"] for p in first["items"]] == list(range(22, 2, -1))
    errs = first["items"][0]["errors"]
    assert errs and errs[0]["type"] in ("config-fetch", "config") and errs[0]["message"]
    second = api.get("/api/v2/project/gh/acme/app/pipeline?page-token=" + first["next_page_token"])
    assert [p["number"] for p in second["items"]] == [2, 1] and second["next_page_token"] is None
    ghost = api.get("/api/v2/project/gh/acme/app/pipeline?branch=ghost")
    assert len(ghost["items"]) == 20 and all(p["vcs"]["branch"] == "ghost" for p in ghost["items"])
    rest = api.get("/api/v2/project/gh/acme/app/pipeline?branch=ghost&page-token=" + ghost["next_page_token"])
    assert [p["number"] for p in rest["items"]] == [1] and rest["next_page_token"] is None
    assert [p["number"] for p in api.get("/api/v2/project/gh/acme/app/pipeline?branch=other")["items"]] == [22]
    assert api.get("/api/v2/project/gh/acme/app/pipeline?branch=none")["items"] == []

    for tok in ("nonsense!", "AAAA", "cDE6MjA%3D", "x" * 300):
        s, b = api.call("/api/v2/project/gh/acme/app/pipeline?page-token=" + tok)
        assert s == 400 and "page-token" in b["message"], (tok, s, b)
    pid = first["items"][0]["id"]
    s, b = api.call(f"/api/v2/pipeline/{pid}/workflow?page-token=" + first["next_page_token"])
    assert s == 400, b  # a token of another list

    for path in ("/api/v2/pipeline/00000000-0000-4000-8000-000000000000", "/api/v2/workflow/nope",
                 "/api/v2/workflow/nope/job", "/api/v2/pipeline/nope/workflow", "/api/v2/pipeline/nope/config",
                 "/api/v2/project/gh/acme/app/pipeline/999", "/api/v2/project/gh/acme/nope/pipeline",
                 "/api/v2/project/gh/acme/app/job/999", "/api/v1.1/project/gh/acme/app/999",
                 "/api/v1.1/project/gh/acme/app/999/output/101/0", "/api/v2/project/gh/acme/app/job/999/output/stream",
                 "/api/private/output/raw/gh/acme/app/999/output/0/101"):
        s, b = api.call(path)
        assert s == 404 and isinstance(b, dict) and b["message"], (path, s, b)
    s, b = api.call(f"/api/v2/pipeline/{pid}/config")
    assert s == 404 and "no config" in b["message"]  # errored before it had one

    for path in ("/api/v2/project/gh/acme/app/pipeline", f"/api/v2/pipeline/{pid}", "/api/v1.1/projects",
                 "/api/v2/project/gh/acme/app/job/1/output/stream"):
        s, b = api.call(path, token=None)
        assert s == 401 and b["message"], (path, b)
        s, b = api.call(path, token="not-a-token")
        assert s == 401, (path, b)


# ---- live output ----

class SSEClient:
    """Reads a Server-Sent Events stream on a thread; keeps the events."""

    def __init__(self, port, path, token):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.conn.request("GET", path, headers={"Circle-Token": token, "Accept": "text/event-stream"})
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.events = []
        self.lock = threading.Lock()
        self.closed = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        buf = b""
        try:
            while True:
                chunk = self.resp.read1(65536)
                if not chunk:
                    break
                buf += chunk
                while b"\n\n" in buf:
                    block, buf = buf.split(b"\n\n", 1)
                    name, data = "message", None
                    for line in block.decode().split("\n"):
                        if line.startswith("event: "):
                            name = line[7:]
                        elif line.startswith("data: "):
                            data = json.loads(line[6:])
                    if data is not None:
                        with self.lock:
                            self.events.append((name, data))
        finally:
            self.closed.set()
            self.conn.close()

    def snapshot(self):
        with self.lock:
            return list(self.events)


def step_lines(events, step):
    text = "".join(l["message"] for name, d in events if name == "output" and d["step"] == step for l in d["lines"])
    return text.splitlines()


@pytest.fixture
def gate_dir():
    d = tempfile.mkdtemp(prefix="spool-gate-", dir="/var/tmp")
    os.chmod(d, 0o755)
    yield d
    shutil.rmtree(d, ignore_errors=True)


def raw_has(api, number, needle):
    s, raw = api.call(f"/api/private/output/raw/gh/acme/app/{number}/output/0/101")
    return s == 200 and needle in raw


def test_stream_joined_mid_job_gets_every_line_once_then_end(agents_server, tmp_path, gate_dir):
    server = agents_server
    gate = os.path.join(gate_dir, "go")
    api = start_ci(server, tmp_path, GATED.replace("GATE", gate))
    api.trigger()
    api.wait_job(1, {"running"})
    # the job has printed its first half and waits at the gate
    wait_for(lambda: raw_has(api, 1, b"line 50\n"), what="the first 50 lines")
    assert api.job(1)["status"] == "running"
    c = SSEClient(server.port, "/api/v2/project/gh/acme/app/job/1/output/stream", api.token)
    assert c.status == 200 and c.headers["content-type"].startswith("text/event-stream")
    wait_for(lambda: "line 50" in step_lines(c.snapshot(), 101), what="the stream to catch up")
    assert not any(name == "end" for name, _ in c.snapshot())
    with open(gate, "w"):
        pass
    assert c.closed.wait(90), "the stream did not end"
    events = c.snapshot()
    assert step_lines(events, 101) == [f"line {i}" for i in range(1, 101)]
    assert [name for name, _ in events].count("end") == 1 and events[-1][0] == "end"
    assert events[-1][1]["status"] == "success"
    steps = [(d["step"], d["status"]) for name, d in events if name == "step"]
    assert steps[:2] == [(0, "success"), (99, "success")]
    assert (101, "running") in steps and steps[-1] == (101, "success")
    # a second client after the end gets the same, then end at once
    late = SSEClient(server.port, "/api/v2/project/gh/acme/app/job/1/output/stream", api.token)
    assert late.closed.wait(30)
    assert step_lines(late.snapshot(), 101) == [f"line {i}" for i in range(1, 101)]
    assert late.snapshot()[-1][0] == "end"


# ---- web UI ----

def test_ui_assets_are_current_and_served_safely(server, tmp_path):
    server.start()
    for path, name, ctype in (("/", "index.html", "text/html"), ("/ui/gh/acme/app", "index.html", "text/html"),
                              ("/ui/gh/acme/app/jobs/3", "index.html", "text/html"),
                              ("/ui/assets/app.js", "app.js", "text/javascript"),
                              ("/ui/assets/app.css", "app.css", "text/css")):
        s, body, h = server.request("GET", path)
        assert s == 200, (path, body)
        with open(os.path.join(ROOT, "ui", name), "rb") as f:
            assert body == f.read(), f"{path} differs from ui/{name}: run tools/dev/gen-ui"
        assert h["content-type"].startswith(ctype)
        assert h["x-content-type-options"] == "nosniff"
        csp = h["content-security-policy"]
        assert "script-src 'self'" in csp and "default-src 'none'" in csp and "unsafe-inline" not in csp
    s, body, _ = server.request("GET", "/ui/assets/nope.js")
    assert s == 404
    s, _, h = server.request("GET", "/gh/acme/app/7")
    assert s == 302 and h["location"] == "/ui/gh/acme/app/jobs/7"


def test_ui_pipelines_and_live_job_page(agents_server, tmp_path, gate_dir, browser):
    server = agents_server
    gate = os.path.join(gate_dir, "go")
    api = start_ci(server, tmp_path, GATED.replace("GATE", gate))
    base = f"http://127.0.0.1:{server.port}"
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))

    # without a token the page asks for one; the token field keeps it
    page.goto(base + "/")
    page.wait_for_selector("[data-testid=need-token]", timeout=30000)
    page.fill("#token", api.token)
    page.click("#token-form button")
    page.wait_for_selector("[data-testid=project]", timeout=30000)
    assert "acme/app" in page.inner_text("[data-testid=project]")

    api.trigger()
    api.wait_job(1, {"running"})
    page.click("text=acme/app")
    page.wait_for_url(base + "/ui/gh/acme/app")
    page.wait_for_selector("[data-testid=pipeline][data-number='1'] [data-testid=workflow-status]", timeout=30000)
    page.wait_for_function(
        "() => [...document.querySelectorAll('[data-testid=job-status]')].some(e => e.textContent === 'running')",
        timeout=30000)
    assert page.inner_text("[data-testid=pipeline] h2") == "main"

    wait_for(lambda: raw_has(api, 1, b"line 50\n"), what="the first 50 lines")
    page.click("[data-testid=job] a")
    page.wait_for_url(base + "/ui/gh/acme/app/jobs/1")
    out = "[data-testid=step][data-step='101'] [data-testid=step-output]"
    page.wait_for_function(f"() => (document.querySelector(\"{out}\") || {{}}).textContent?.includes('line 50\\n')",
                           timeout=30000)
    assert "line 51" not in page.inner_text(out)
    assert page.text_content("[data-testid=job-status]") == "running"

    with open(gate, "w"):
        pass
    # new lines arrive live, then the final status
    page.wait_for_function(f"() => document.querySelector(\"{out}\").textContent.includes('line 100\\n')",
                           timeout=60000)
    page.wait_for_function(
        "() => document.querySelector('[data-testid=job-status]').textContent === 'success'", timeout=60000)
    lines = page.inner_text(out).splitlines()
    assert lines == [f"line {i}" for i in range(1, 101)]
    assert page.text_content("[data-testid=step][data-step='101'] [data-testid=step-status]") == "success"
    assert not errors, errors


def test_ui_shows_ansi_colours(agents_server, tmp_path, browser):
    server = agents_server
    api = start_ci(server, tmp_path, CONFIG)
    api.trigger()
    api.wait_job(1, FINAL)
    page = browser.new_page()
    page.goto(f"http://127.0.0.1:{server.port}/")
    page.fill("#token", api.token)
    page.click("#token-form button")
    page.goto(f"http://127.0.0.1:{server.port}/ui/gh/acme/app/jobs/1")
    red = "[data-testid=step][data-step='101'] .ansi-fg-1"
    page.wait_for_selector(red, timeout=30000)
    assert page.inner_text(red) == "red"
    assert page.eval_on_selector(red, "e => getComputedStyle(e).color") == "rgb(255, 123, 114)"
    text = page.inner_text("[data-testid=step][data-step='101'] [data-testid=step-output]")
    assert "\x1b" not in text and "red plain" in text and "to stderr" in text


# ---- the OpenAPI document ----

def test_openapi_documents_every_route():
    """docs/openapi.json describes exactly the routes of src/http/routes.c."""
    import re
    with open(os.path.join(ROOT, "src", "http", "routes.c")) as f:
        routes = set()
        for method, path in re.findall(r'\{"(GET|POST|PUT|PATCH|DELETE)", "([^"]+)", (?:http__|h_)\w+', f.read()):
            routes.add((method.lower(), re.sub(r":(\w+)", r"{\1}", path)))
    with open(os.path.join(ROOT, "docs", "openapi.json")) as f:
        doc = json.load(f)
    assert doc["openapi"].startswith("3.")
    documented = {(m, p) for p, ops in doc["paths"].items() for m in ops}
    assert routes, "no routes found in routes.c"
    assert routes - documented == set(), "routes missing from docs/openapi.json"
    assert documented - routes == set(), "docs/openapi.json lists routes the server does not serve"
    for p, ops in doc["paths"].items():
        for m, o in ops.items():
            assert o.get("x-spool-access") and o.get("x-circleci-compatible") and o.get("responses"), (m, p)
            for ref in re.findall(r'"\$ref": "#/components/schemas/(\w+)"', json.dumps(o)):
                assert ref in doc["components"]["schemas"], ref
