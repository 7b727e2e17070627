"""Workflow control end to end: approval, cancel, rerun from failed,
parallelism, concurrency limits, auto-cancel, resource classes, drain, and
the queue as operators see it. Real server, real git, local agents."""

import json
import os
import subprocess
import tempfile

import pytest

from conftest import run_spool, wait_for
from test_pipelines import CI, SECRET


def config(jobs, workflow):
    return "version: 2.1\njobs:\n" + jobs + "workflows:\n  main:\n    jobs:\n" + workflow


def job(name, command, extra=""):
    return (f"  {name}:\n    docker: [{{image: cimg/base:stable}}]\n    resource_class: small\n{extra}"
            f"    steps:\n      - run: {json.dumps(command)}\n")


@pytest.fixture
def ci(tmp_path):
    c = CI(tmp_path)
    yield c
    if c.server.proc is not None:
        c.server.kill()


def latest_workflow(ci, number):
    s, p = ci.api(f"/api/v2/project/gh/acme/app/pipeline/{number}")
    if s != 200:
        return None
    s, wfs = ci.api(f"/api/v2/pipeline/{p['id']}/workflow")
    return wfs["items"][-1] if s == 200 and wfs["items"] else None


def wait_job(ci, number, name, statuses, timeout=60):
    def check():
        wf = latest_workflow(ci, number)
        if wf is None:
            return None
        j = ci.jobs(wf["id"]).get(name)
        return (wf, j) if j and j["status"] in statuses else None
    return wait_for(check, timeout=timeout, what=f"job {name} of pipeline {number} to be {statuses}")


def test_approval_holds_the_workflow_until_approved(ci):
    ci.start()
    jobs = job("build", "echo built") + job("deploy", "echo deployed")
    wf = "      - build\n      - hold: {type: approval, requires: [build]}\n      - deploy: {requires: [hold]}\n"
    ci.repo.commit("approval", {".circleci/config.yml": config(jobs, wf)})
    ci.repo.push("main")
    w, hold = wait_job(ci, 1, "hold", ("on_hold",))
    wait_for(lambda: latest_workflow(ci, 1)["status"] == "on_hold", what="workflow on_hold")
    assert hold["type"] == "approval" and hold["approval_request_id"] == hold["id"]
    assert ci.jobs(w["id"])["deploy"]["status"] == "blocked"
    s, body = ci.api(f"/api/v2/workflow/{w['id']}/approve/not-a-request", "POST")
    assert s == 404
    s, body = ci.api(f"/api/v2/workflow/{w['id']}/approve/{hold['approval_request_id']}", "POST")
    assert s == 202, body
    p, wfs = ci.wait_pipeline(1)
    jobs = ci.jobs(wfs[0]["id"])
    assert wfs[0]["status"] == "success" and jobs["deploy"]["status"] == "success"
    assert jobs["hold"]["status"] == "success" and jobs["hold"]["approved_by"].startswith("user:")


def test_cancel_kills_the_running_job(ci, tmp_path):
    ci.start()
    marker = tempfile.mktemp(dir="/var/tmp", prefix="spool-cancel-")
    jobs = job("slow", f"sleep 30; touch {marker}") + job("after", "echo never")
    ci.repo.commit("slow", {".circleci/config.yml": config(jobs, "      - slow\n      - after: {requires: [slow]}\n")})
    ci.repo.push("main")
    w, _ = wait_job(ci, 1, "slow", ("running",))
    s, body = ci.api(f"/api/v2/workflow/{w['id']}/cancel", "POST")
    assert s == 202, body
    p, wfs = ci.wait_pipeline(1, timeout=30)
    jobs = ci.jobs(wfs[0]["id"])
    assert wfs[0]["status"] == "canceled"
    assert jobs["slow"]["status"] == "canceled" and jobs["after"]["status"] == "canceled"
    assert not os.path.exists(marker)  # the sleep was killed, never reached touch


def test_rerun_from_failed_runs_only_what_failed(ci):
    ci.start()
    flag = tempfile.mktemp(dir="/var/tmp", prefix="spool-rerun-")
    jobs = job("build", "echo build") + job("test", f"test -e {flag}")
    ci.repo.commit("flaky", {".circleci/config.yml": config(jobs, "      - build\n      - test: {requires: [build]}\n")})
    ci.repo.push("main")
    p, wfs = ci.wait_pipeline(1)
    first = ci.jobs(wfs[0]["id"])
    assert wfs[0]["status"] == "failed" and first["test"]["status"] == "failed"
    open(flag, "w").close()
    try:
        first_wf = wfs[0]["id"]
        s, body = ci.api(f"/api/v2/workflow/{wfs[0]['id']}/rerun", "POST", {"from_failed": True})
        assert s == 202, body
        new_id = body["workflow_id"]
        assert new_id != wfs[0]["id"]
        p, wfs = ci.wait_pipeline(1)
        assert [w["id"] for w in wfs] == [first_wf, new_id] and wfs[-1]["status"] == "success"
        second = ci.jobs(new_id)
        assert second["test"]["status"] == "success" and second["build"]["status"] == "success"
        assert second["test"]["job_number"] > first["test"]["job_number"]
        s, build = ci.api(f"/api/v2/project/gh/acme/app/job/{second['build']['job_number']}")
        assert "not run again" in json.dumps(build) or second["build"]["status"] == "success"
        s, body = ci.api(f"/api/v2/workflow/{new_id}/rerun", "POST", {"from_failed": True, "jobs": ["x"]})
        assert s == 400
    finally:
        os.unlink(flag)


def test_parallelism_runs_n_tasks(ci):
    ci.start()
    jobs = job("split", 'echo "node $CIRCLE_NODE_INDEX of $CIRCLE_NODE_TOTAL"', "    parallelism: 3\n")
    ci.repo.commit("parallel", {".circleci/config.yml": config(jobs, "      - split\n")})
    ci.repo.push("main")
    p, wfs = ci.wait_pipeline(1)
    j = ci.jobs(wfs[0]["id"])["split"]
    s, d = ci.api(f"/api/v2/project/gh/acme/app/job/{j['job_number']}")
    assert d["parallelism"] == 3
    assert sorted((r["index"], r["status"]) for r in d["parallel_runs"]) == [(0, "success"), (1, "success"), (2, "success")]
    s, build = ci.api(f"/api/v1.1/project/gh/acme/app/{j['job_number']}")
    actions = [a for st in build["steps"] for a in st["actions"] if a["step"] == 101]
    assert sorted(a["index"] for a in actions) == [0, 1, 2]
    for a in actions:
        url = a["output_url"]
        s, out = ci.api(url[url.index("/api/"):])
        assert f"node {a['index']} of 3" in "".join(o["message"] for o in out)


def test_unknown_resource_class_fails_the_job_clearly(ci):
    ci.start()
    jobs = "  big:\n    docker: [{image: x}]\n    resource_class: gigantic\n    steps: [{run: 'true'}]\n"
    ci.repo.commit("big", {".circleci/config.yml": config(jobs, "      - big\n")})
    ci.repo.push("main")
    p, wfs = ci.wait_pipeline(1)
    j = ci.jobs(wfs[0]["id"])["big"]
    assert j["status"] == "failed"
    s, d = ci.api(f"/api/v2/project/gh/acme/app/job/{j['job_number']}")
    assert d["executor"]["resource_class"] == "gigantic", d
    assert any('resource class "gigantic" is not defined for the docker executor' in m["message"]
               for m in d["messages"]), d


def test_concurrency_limit_queues_in_the_usage_queue(ci):
    ci.start()
    s, body, _ = ci.server.request("PATCH", "/api/v2/project/github/acme/app/settings", {"spool": {"concurrency": 1}},
                                admin=True)
    assert s == 200 and json.loads(body)["concurrency"] == 1
    gate = tempfile.mktemp(dir="/var/tmp", prefix="spool-gate-")
    jobs = job("a", f"while [ ! -e {gate} ]; do sleep 0.05; done") + job("b", "echo b")
    ci.repo.commit("two", {".circleci/config.yml": config(jobs, "      - a\n      - b\n")})
    ci.repo.push("main")
    try:
        wait_job(ci, 1, "a", ("running",))
        w, b = wait_job(ci, 1, "b", ("queued",))
        s, d = ci.api(f"/api/v2/project/gh/acme/app/job/{b['job_number']}")
        assert d["queue"]["queue"] == "usage" and d["queue"]["reason"] == "project concurrency limit"
        p = run_spool("queue", "--json", data=ci.server.data)
        q = json.loads(p.stdout)
        assert q["queued"] == 1 and q["projects"][0]["usage_queue"] == 1
        # promoting past the limit is the operator's call
        p = run_spool("queue", "promote", b["id"], data=ci.server.data)
        assert p.returncode == 0, p.stderr
        wait_job(ci, 1, "b", ("success",))
    finally:
        open(gate, "w").close()
    ci.wait_pipeline(1)
    os.unlink(gate)


def test_autocancel_supersedes_pipelines_on_a_branch(ci):
    ci.start()
    s, body, _ = ci.server.request("PATCH", "/api/v2/project/gh/acme/app/settings",
                                {"advanced": {"autocancel_builds": True}}, admin=True)
    assert s == 200, body
    jobs = job("slow", "sleep 30")
    ci.repo.commit("one", {".circleci/config.yml": config(jobs, "      - slow\n")})
    subprocess.run(["git", "checkout", "-q", "-b", "feature"], cwd=ci.repo.work, check=True)
    ci.repo.push("feature")
    wait_job(ci, 1, "slow", ("running",))
    ci.repo.commit("two")
    ci.repo.push("feature")
    p, wfs = ci.wait_pipeline(1, timeout=30)
    assert wfs[0]["status"] == "canceled" and "superseded" in wfs[0].get("canceled_by", "")
    s, body = ci.api(f"/api/v2/workflow/{latest_workflow(ci, 2)['id']}/cancel", "POST")
    assert s == 202
    # the default branch is never auto-canceled
    subprocess.run(["git", "checkout", "-q", "main"], cwd=ci.repo.work, check=True)


def test_drain_holds_work_and_nodes_show_allocations(ci):
    ci.start()
    p = run_spool("nodes", "list", "--json", data=ci.server.data)
    nodes = json.loads(p.stdout)["items"]
    assert len(nodes) == 1 and nodes[0]["status"] in ("ready", "initializing") and not nodes[0]["drain"]
    assert run_spool("nodes", "drain", "local", data=ci.server.data).returncode == 0
    jobs = job("x", "echo x")
    ci.repo.commit("drained", {".circleci/config.yml": config(jobs, "      - x\n")})
    ci.repo.push("main")
    w, x = wait_job(ci, 1, "x", ("queued",))
    s, d = ci.api(f"/api/v2/project/gh/acme/app/job/{x['job_number']}")
    assert d["queue"]["reason"] == "every agent that fits is draining"
    assert run_spool("nodes", "undrain", "local", data=ci.server.data).returncode == 0
    wait_job(ci, 1, "x", ("success",))
    p = run_spool("queue", "cancel", "--oldest", "5", data=ci.server.data)
    assert p.returncode == 0 and "canceled 0 jobs" in p.stdout


def test_ui_approves_cancels_and_reruns(ci, browser):
    ci.start()
    gate = tempfile.mktemp(dir="/var/tmp", prefix="spool-uigate-")
    jobs = job("build", "echo built") + job("deploy", f"while [ ! -e {gate} ]; do sleep 0.05; done")
    wf = "      - build\n      - hold: {type: approval, requires: [build]}\n      - deploy: {requires: [hold]}\n"
    ci.repo.commit("approval", {".circleci/config.yml": config(jobs, wf)})
    ci.repo.push("main")
    wait_job(ci, 1, "hold", ("on_hold",))
    base = f"http://127.0.0.1:{ci.server.port}"
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(base + "/")
    page.evaluate(f"localStorage.setItem('spool.token', {json.dumps(ci.token)})")
    page.goto(base + "/ui/gh/acme/app")
    page.click("[data-testid=approve]", timeout=30000)
    w, deploy = wait_job(ci, 1, "deploy", ("running",))
    assert ci.jobs(w["id"])["hold"]["approved_by"].startswith("user:")
    # the page redraws with the workflow running: cancel it from there
    page.click("[data-testid=cancel-workflow]", timeout=30000)
    wait_job(ci, 1, "deploy", ("canceled",))
    # once it has ended, the workflow can be run again from the start
    page.click("[data-testid=rerun]", timeout=30000)
    refused = lambda: page.locator("[data-testid=action-error]").all_inner_texts()  # noqa: E731
    wait_for(lambda: refused() or len(ci.api(f"/api/v2/pipeline/{w['pipeline_id']}/workflow")[1]["items"]) == 2,
             what="a second workflow")
    assert not refused(), refused()
    assert not errors, errors


def test_agent_tokens_are_stored_hashed_and_revocable(ci):
    ci.start()
    p = run_spool("agents", "token", "create", "build-01", data=ci.server.data, check=True)
    tok = json.loads(p.stdout)
    assert tok["role"] == "agent"
    reg = {"name": "build-01", "slots": 1, "cpus": 8, "memory_mb": 16384, "labels": ["linux"]}

    def register(token):
        s, body, _ = ci.server.request("POST", "/api/agent/v1/register", reg,
                                       headers={"Authorization": f"Bearer {token}"})
        return s, json.loads(body)

    s, body = register(tok["token"])
    assert s == 201 and "docker:medium" in body["resource_classes"] and "docker:massive" not in body["resource_classes"]
    s, _ = register(ci.token)  # a user token is not an agent token
    assert s == 403
    log = run_spool("log", "tail", "--json", data=ci.server.data, check=True).stdout
    assert tok["token"] not in log  # only its hash is in the log
    run_spool("agents", "token", "revoke", tok["id"], data=ci.server.data, check=True)
    s, body = register(tok["token"])
    assert s == 401, body
    # a user token likewise
    p = run_spool("tokens", "create", "someone", data=ci.server.data, check=True)
    user = json.loads(p.stdout)
    s, _, _ = ci.server.request("GET", "/api/v2/project/gh/acme/app", headers={"Circle-Token": user["token"]})
    assert s == 200
    run_spool("tokens", "revoke", user["id"], data=ci.server.data, check=True)
    s, _, _ = ci.server.request("GET", "/api/v2/project/gh/acme/app", headers={"Circle-Token": user["token"]})
    assert s == 401


def test_queued_jobs_survive_a_crash_of_the_server(tmp_path):
    ci = CI(tmp_path, extra_args=["--lease-timeout", "1500"])
    try:
        ci.start()
        s, body, _ = ci.server.request("PATCH", "/api/v2/project/gh/acme/app/settings", {"spool": {"concurrency": 1}},
                                       admin=True)
        assert s == 200, body
        gate = tempfile.mktemp(dir="/var/tmp", prefix="spool-gate-")
        wait = f"while [ ! -e {gate} ]; do sleep 0.05; done"
        jobs = job("a", wait) + job("b", wait) + job("c", wait)
        ci.repo.commit("three", {".circleci/config.yml": config(jobs, "      - a\n      - b\n      - c\n")})
        ci.repo.push("main")
        wait_job(ci, 1, "a", ("running",))
        wait_job(ci, 1, "b", ("queued",))
        wait_job(ci, 1, "c", ("queued",))
        ci.server.kill()  # SIGKILL: the local agents and a's step die with it
        ci.server.start()
        q = json.loads(run_spool("queue", "--json", data=ci.server.data, check=True).stdout)
        assert [j["name"] for j in q["jobs"]][-2:] == ["b", "c"], q["jobs"]
        open(gate, "w").close()
        p, wfs = ci.wait_pipeline(1)
        jobs = ci.jobs(wfs[0]["id"])
        assert {n: j["status"] for n, j in jobs.items()} == {"a": "infrastructure_fail", "b": "success",
                                                              "c": "success"}
        started = [e["body"]["id"] for e in map(json.loads, run_spool("log", "tail", "--json", data=ci.server.data,
                                                                        check=True).stdout.splitlines())
                   if e["type"] == "job.started"]
        assert started.index(jobs["b"]["id"]) < started.index(jobs["c"]["id"])  # FIFO kept across the crash
        os.unlink(gate)
    finally:
        if ci.server.proc is not None:
            ci.server.kill()
