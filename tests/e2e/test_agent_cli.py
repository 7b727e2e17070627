"""`spool agent` as a process against a real `spool serve` (no local
agents) over HTTP: usage errors, refusing to run without a sandbox,
--once, SIGTERM (drain, then kill after --grace and finish the task as
infrastructure_fail), and a refused token. The agent's protocol code is
tested in depth in tests/agent/."""

import json
import os
import shutil
import signal
import subprocess

import pytest

from conftest import ENV, SPOOL, run_spool, wait_for
from test_pipelines import CI


@pytest.fixture
def ci(tmp_path):
    c = CI(tmp_path, slots=0).start()
    c.agent_token = json.loads(run_spool("agents", "token", "create", "e2e", data=c.server.data,
                                         check=True).stdout)["token"]
    yield c
    if c.server.proc is not None:
        c.server.kill()


def start_agent(tmp_path, ci, *extra, token=None):
    args = [SPOOL, "agent", "--server", f"http://{ci.server.host}:{ci.server.port}", "--work-dir",
            str(tmp_path / "work"), "--name", "e2e", "--cpus", "8", "--memory-mb", "16384", *extra]
    env = dict(ENV, SPOOL_AGENT_TOKEN=token or ci.agent_token)
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True)


def push_job(ci, command):
    ci.repo.commit("ci", {".circleci/config.yml": "version: 2.1\njobs:\n  build:\n"
                                                  "    docker: [{image: cimg/base:stable}]\n"
                                                  f"    steps:\n      - run: {json.dumps(command)}\n"})
    ci.repo.push("main")


def build_job(ci, number=1):
    """The job of pipeline `number` once it exists, else None."""
    s, p = ci.api(f"/api/v2/project/gh/acme/app/pipeline/{number}")
    if s != 200:
        return None
    s, wfs = ci.api(f"/api/v2/pipeline/{p['id']}/workflow")
    if s != 200 or not wfs["items"]:
        return None
    return ci.jobs(wfs["items"][0]["id"]).get("build")


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
def test_agent_once_runs_a_task_and_exits(tmp_path, ci):
    push_job(ci, "echo hello from the agent")
    p = start_agent(tmp_path, ci, "--once")
    try:
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 0, p.stderr.read()
    _, wfs = ci.wait_pipeline(1)
    job = ci.jobs(wfs[0]["id"])["build"]
    assert job["status"] == "success"
    s, build = ci.api(f"/api/v1.1/project/gh/acme/app/{job['job_number']}")
    assert s == 200 and [st["actions"][0]["step"] for st in build["steps"]] == [0, 99, 101]
    text, action = ci.output(job["job_number"], 101)
    assert "hello from the agent" in text and action["status"] == "success"
    assert [d for d in os.listdir(tmp_path / "work") if os.path.isdir(tmp_path / "work" / d)] == []


@pytest.mark.skipif(shutil.which("bwrap") is None, reason="bubblewrap is not installed")
def test_agent_sigterm_drains_then_fails_running_task(tmp_path, ci):
    p = start_agent(tmp_path, ci, "--grace", "1")
    try:
        push_job(ci, "sleep 1000")
        wait_for(lambda: (build_job(ci) or {}).get("status") == "running", what="the job to run")

        def step_101_started():
            s, build = ci.api(f"/api/v1.1/project/gh/acme/app/{build_job(ci)['job_number']}")
            return s == 200 and any(st["actions"][0]["step"] == 101 for st in build["steps"])
        wait_for(step_101_started, what="step 101 to start")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read()
    assert rc == 0, err
    assert "grace period over" in err
    job = wait_for(lambda: (lambda j: j if j["status"] != "running" else None)(build_job(ci)),
                   what="the job to end")
    assert job["status"] == "infrastructure_fail"
    _, action = ci.output(job["job_number"], 101)
    assert action["status"] == "canceled"


def test_agent_with_a_refused_token_exits_1(tmp_path, ci):
    p = start_agent(tmp_path, ci, "--no-sandbox", token="wrong")
    try:
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    assert rc == 1
    assert "refused" in p.stderr.read()
