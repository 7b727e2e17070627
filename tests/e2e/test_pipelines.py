"""Pipelines end to end: a bare repository, `git push`, a post-receive hook
that posts the signed GitHub webhook with curl, the real server running the
jobs on its local agents; everything checked through the API."""

import json
import os
import signal
import subprocess

import pytest

from conftest import Server, UnixHTTPConnection, wait_for
from gitrepo import Repo

SECRET = "hook-s3cret"

CONFIG = """\
version: 2.1
jobs:
  build:
    docker: [{image: cimg/base:stable}]
    environment: {GREETING: hello}
    steps:
      - checkout
      - run: 'echo "$GREETING from $CIRCLE_JOB #$CIRCLE_BUILD_NUM on $CIRCLE_BRANCH at $CIRCLE_SHA1"'
      - run:
          name: files
          command: ls README.md && test "$CIRCLE_PROJECT_REPONAME" = app
  test:
    docker: [{image: cimg/base:stable}]
    steps:
      - run: {name: unit, command: "echo testing; exit ${FAIL_WITH:-0}"}
  deploy:
    docker: [{image: cimg/base:stable}]
    steps: [{run: echo deploying}]
workflows:
  main:
    jobs:
      - build
      - test: {requires: [build]}
      - deploy:
          requires: [test]
          filters: {branches: {only: [main, /release-.*/]}}
"""


class CI:
    """A server with local agents, a project, a token and a hooked repo."""

    def __init__(self, tmp_path, slots=2, extra_args=(), **server_kw):
        self.repo = Repo(tmp_path / "git")
        self.server = Server(tmp_path / "data", slots=slots, extra_args=extra_args, **server_kw)

    def start(self):
        self.server.start()
        s, body, _ = self.server.request("POST", "/admin/tokens", {"name": "tester", "role": "user"}, admin=True)
        assert s == 201, body
        self.token = json.loads(body)["token"]
        s, body, _ = self.server.request("POST", "/api/v2/project", {"slug": "gh/acme/app", "vcs_url": self.repo.url,
                                                                      "webhook_secret": SECRET}, admin=True)
        assert s == 201, body
        self.repo.hook(f"http://{self.server.host}:{self.server.port}", SECRET)
        return self

    def api(self, path, method="GET", body=None, token=True):
        headers = {"Circle-Token": self.token} if token else {}
        s, b, _ = self.server.request(method, path, body, headers=headers)
        return s, (json.loads(b) if b and b[:1] in (b"{", b"[") else b)

    def pipelines(self):
        s, body = self.api("/api/v2/project/gh/acme/app/pipeline")
        assert s == 200, body
        return body["items"]

    def wait_pipeline(self, number, timeout=60):
        def done():
            s, p = self.api(f"/api/v2/project/gh/acme/app/pipeline/{number}")
            if s != 200 or p["state"] == "pending":
                return None
            if p["state"] == "errored":
                return p, []
            s, wfs = self.api(f"/api/v2/pipeline/{p['id']}/workflow")
            if s != 200 or any(w["status"] in ("running", "failing", "on_hold") for w in wfs["items"]):
                return None
            return p, wfs["items"]
        return wait_for(done, timeout=timeout, what=f"pipeline {number} to finish")

    def jobs(self, workflow_id):
        s, body = self.api(f"/api/v2/workflow/{workflow_id}/job")
        assert s == 200, body
        return {j["name"]: j for j in body["items"]}

    def output(self, job_number, step):
        s, build = self.api(f"/api/v1.1/project/gh/acme/app/{job_number}")
        assert s == 200, build
        for st in build["steps"]:
            for a in st["actions"]:
                if a["step"] == step:
                    url = a["output_url"]
                    path = url[url.index("/api/"):] if "://" in url else url
                    s, out = self.api(path)
                    assert s == 200, out
                    return "".join(o["message"] for o in out), a
        raise AssertionError(f"no step {step} in {build['steps']}")


@pytest.fixture
def ci(tmp_path):
    c = CI(tmp_path)
    yield c
    if c.server.proc is not None:
        c.server.kill()


def test_push_runs_the_workflow_and_output_is_visible(ci):
    ci.start()
    sha = ci.repo.commit("Add CI\n\nWith a body.", {".circleci/config.yml": CONFIG, "README.md": "hi\n"})
    ci.repo.push("main")
    assert ci.repo.hook_statuses() == [201]
    p, wfs = ci.wait_pipeline(1)
    assert p["vcs"]["revision"] == sha and p["vcs"]["branch"] == "main"
    assert p["vcs"]["commit"]["subject"] == "Add CI"
    assert p["trigger"]["type"] == "webhook" and p["state"] == "created"
    assert [w["name"] for w in wfs] == ["main"] and wfs[0]["status"] == "success"
    jobs = ci.jobs(wfs[0]["id"])
    assert {n: j["status"] for n, j in jobs.items()} == {"build": "success", "test": "success", "deploy": "success"}
    assert jobs["test"]["dependencies"] == [jobs["build"]["id"]]
    text, action = ci.output(jobs["build"]["job_number"], 102)
    assert f"hello from build #{jobs['build']['job_number']} on main at {sha}" in text
    assert action["status"] == "success" and action["exit_code"] == 0
    s, job = ci.api(f"/api/v2/project/gh/acme/app/job/{jobs['build']['job_number']}")
    assert s == 200 and job["status"] == "success" and job["name"] == "build"


def test_failing_step_fails_the_job_and_its_dependents_do_not_run(ci):
    ci.start()
    failing = CONFIG.replace('"echo testing; exit ${FAIL_WITH:-0}"', '"echo testing; exit 3"')
    ci.repo.commit("Break the tests", {".circleci/config.yml": failing, "README.md": "hi\n"})
    ci.repo.push("main")
    p, wfs = ci.wait_pipeline(1)
    assert wfs[0]["status"] == "failed"
    jobs = ci.jobs(wfs[0]["id"])
    assert jobs["build"]["status"] == "success"
    assert jobs["test"]["status"] == "failed"
    assert jobs["deploy"]["status"] == "not_run"
    text, action = ci.output(jobs["test"]["job_number"], 101)
    assert "testing" in text and action["exit_code"] == 3 and action["status"] == "failed"


def test_filters_select_jobs_for_branches_and_tags(ci):
    ci.start()
    ci.repo.commit("CI", {".circleci/config.yml": CONFIG, "README.md": "hi\n"})
    git_branch = "feature"
    subprocess.run(["git", "checkout", "-q", "-b", git_branch], cwd=ci.repo.work, check=True)
    ci.repo.push(git_branch)
    p, wfs = ci.wait_pipeline(1)
    assert set(ci.jobs(wfs[0]["id"])) == {"build", "test"}  # deploy only on main and release-*
    subprocess.run(["git", "checkout", "-q", "-b", "release-1"], cwd=ci.repo.work, check=True)
    ci.repo.push("release-1")
    p, wfs = ci.wait_pipeline(2)
    assert set(ci.jobs(wfs[0]["id"])) == {"build", "test", "deploy"}
    # A tag runs only jobs with a tags filter that admits it: none here.
    subprocess.run(["git", "tag", "v1.0"], cwd=ci.repo.work, check=True)
    ci.repo.push("v1.0")
    p, wfs = ci.wait_pipeline(3)
    assert p["vcs"]["tag"] == "v1.0" and wfs == []


def test_redelivery_is_idempotent_and_a_bad_signature_changes_nothing(ci):
    ci.start()
    ci.repo.commit("CI", {".circleci/config.yml": CONFIG, "README.md": "hi\n"})
    ci.repo.push("main")
    ci.wait_pipeline(1)
    delivery = ci.repo.last_delivery()
    sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ci.repo.work, capture_output=True, text=True).stdout.strip()
    body = json.dumps({"ref": "refs/heads/main", "after": sha, "head_commit": {"id": sha, "message": "CI"},
                       "repository": {"full_name": "acme/app"}, "pusher": {"name": "ada"}})
    import hashlib, hmac
    sig = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
    head = ci.server.status()["head_sequence"]
    hdrs = {"X-GitHub-Event": "push", "X-GitHub-Delivery": delivery, "X-Hub-Signature-256": sig}
    s, b, _ = ci.server.request("POST", "/webhooks/github", body, headers=hdrs)
    assert s == 200 and b"already processed" in b
    assert ci.server.status()["head_sequence"] == head
    assert len(ci.pipelines()) == 1
    for bad in ("sha256=" + "0" * 64, None):
        h = dict(hdrs, **{"X-GitHub-Delivery": "fresh-1"})
        if bad is None:
            del h["X-Hub-Signature-256"]
        else:
            h["X-Hub-Signature-256"] = bad
        s, b, _ = ci.server.request("POST", "/webhooks/github", body, headers=h)
        assert s == 401, b
    s, b, _ = ci.server.request("POST", "/webhooks/github", "{not json", headers=dict(hdrs, **{"X-GitHub-Delivery": "f2"}))
    assert s == 400 and json.loads(b)["message"]
    unknown = body.replace("acme/app", "acme/other")
    s, b, _ = ci.server.request("POST", "/webhooks/github", unknown, headers=dict(hdrs, **{"X-GitHub-Delivery": "f3"}))
    assert s == 404
    ping = dict(hdrs, **{"X-GitHub-Event": "ping", "X-GitHub-Delivery": "f4"})
    s, b, _ = ci.server.request("POST", "/webhooks/github", body, headers=ping)
    assert s == 200
    assert ci.server.status()["head_sequence"] == head
    # deleting a branch starts nothing
    subprocess.run(["git", "push", "-q", "origin", "main:gone"], cwd=ci.repo.work, check=True, env=dict(os.environ, **ci.repo.env))
    ci.wait_pipeline(2)
    subprocess.run(["git", "push", "-q", "origin", "--delete", "gone"], cwd=ci.repo.work, check=True, env=dict(os.environ, **ci.repo.env))
    assert ci.repo.hook_statuses()[-1] == 200
    assert len(ci.pipelines()) == 2


def test_config_errors_put_the_pipeline_in_errored(ci):
    ci.start()
    ci.repo.commit("no config", {"README.md": "x\n"})
    ci.repo.push("main")
    p, _ = ci.wait_pipeline(1)
    assert p["state"] == "errored" and p["errors"][0]["type"] == "config"
    assert ".circleci/config.yml" in p["errors"][0]["message"]
    ci.repo.commit("broken yaml", {".circleci/config.yml": "version: 2.1\njobs:\n  build: [\n"})
    ci.repo.push("main")
    p, _ = ci.wait_pipeline(2)
    assert p["state"] == "errored" and p["errors"][0]["type"] == "config"
    assert ".circleci/config.yml:4:" in p["errors"][0]["message"]  # the flow sequence never ends


def test_api_trigger_and_auth(ci):
    ci.start()
    ci.repo.commit("CI", {".circleci/config.yml": CONFIG, "README.md": "hi\n"})
    ci.repo.push("main")
    ci.wait_pipeline(1)
    s, body = ci.api("/api/v2/project/gh/acme/app/pipeline", "POST", {"branch": "main"})
    assert s == 201 and body["number"] == 2 and set(body) == {"id", "state", "number", "created_at"}
    ci.wait_pipeline(2)
    s, body = ci.api("/api/v2/project/gh/acme/app/pipeline", "POST", {"branch": "main"}, token=False)
    assert s == 401
    s, body = ci.api("/api/v2/project/gh/acme/app/pipeline", "POST", {"branch": "main", "tag": "x"})
    assert s == 400 and "exactly one" in body["message"]
    s, body = ci.api("/api/v2/project/gh/acme/nope/pipeline", "POST", {"branch": "main"})
    assert s == 404


def test_restart_mid_job_never_leaves_it_running(tmp_path):
    ci = CI(tmp_path, extra_args=["--lease-timeout", "2000"])
    try:
        ci.start()
        slow = CONFIG.replace("echo deploying", "sleep 60")
        ci.repo.commit("slow deploy", {".circleci/config.yml": slow, "README.md": "hi\n"})
        ci.repo.push("main")

        def deploy_running():
            items = ci.pipelines()
            if not items:
                return None
            s, wfs = ci.api(f"/api/v2/pipeline/{items[0]['id']}/workflow")
            if s != 200 or not wfs["items"]:
                return None
            jobs = ci.jobs(wfs["items"][0]["id"])
            return jobs if jobs.get("deploy", {}).get("status") == "running" else None

        jobs = wait_for(deploy_running, timeout=60, what="deploy to be running")
        ci.server.kill()
        ci.server.start()
        p, wfs = ci.wait_pipeline(1, timeout=60)
        final = ci.jobs(wfs[0]["id"])["deploy"]["status"]
        assert final in ("infrastructure_fail", "success"), final
        assert wfs[0]["status"] in ("failed", "success")
    finally:
        if ci.server.proc is not None:
            ci.server.kill()


def test_cli_adds_projects_and_tokens_and_stop_building(tmp_path):
    from conftest import run_spool
    repo = Repo(tmp_path / "git")
    server = Server(tmp_path / "data", slots=2)
    try:
        server.start()
        data = str(tmp_path / "data")
        p = run_spool("project", "add", "acme/app", "--url", repo.url, "--webhook-secret", SECRET, data=data)
        assert p.returncode == 0, p.stderr
        assert json.loads(p.stdout)["slug"] == "gh/acme/app"
        p = run_spool("project", "add", "acme/app", "--url", repo.url, data=data)
        assert p.returncode == 1 and "already exists" in p.stderr
        p = run_spool("project", "add", "acme/app", data=data)
        assert p.returncode == 2 and "--url" in p.stderr
        p = run_spool("tokens", "create", "ci-bot", "--role", "user", data=data)
        assert p.returncode == 0, p.stderr
        token = json.loads(p.stdout)["token"]
        repo.hook(f"http://127.0.0.1:{server.port}", SECRET)
        repo.commit("CI", {".circleci/config.yml": CONFIG, "README.md": "hi\n"})
        repo.push("main")
        wait_for(lambda: server.request("GET", "/api/v2/project/gh/acme/app/pipeline",
                                        headers={"Circle-Token": token})[0] == 200, what="API with the token")
        assert run_spool("project", "stop", "acme/app", data=data).returncode == 0
        repo.commit("more")
        repo.push("main")
        assert repo.hook_statuses()[-1] == 200  # accepted, but nothing is built
        s, body, _ = server.request("POST", "/api/v2/project/gh/acme/app/pipeline", {"branch": "main"},
                                    headers={"Circle-Token": token})
        assert s == 400 and "building is stopped" in json.loads(body)["message"]
        assert run_spool("project", "resume", "acme/app", data=data).returncode == 0
        s, body, _ = server.request("POST", "/api/v2/project/gh/acme/app/pipeline", {"branch": "main"},
                                    headers={"Circle-Token": token})
        assert s == 201, body
        p = run_spool("tokens", "revoke", json.loads(run_spool("tokens", "create", "tmp", data=data).stdout)["id"],
                      data=data)
        assert p.returncode == 0, p.stderr
        assert run_spool("project", "follow", "acme/app", data=data).returncode == 0
    finally:
        if server.proc is not None:
            server.kill()
