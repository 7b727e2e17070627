"""The fleet across hosts: the server in one network namespace, `spool
agent` processes in others, all joined by a bridge, so agents reach the
server over a real network that a test can cut. Spreading, drain, an agent
killed mid-job, a partitioned agent whose late report must not count twice,
cancel on a remote agent, and a job that waits for an agent big enough.

Needs root (ip netns, iptables); skipped otherwise."""

import json
import os
import random
import shutil
import signal
import subprocess
import tempfile

import pytest

from conftest import ENV, SPOOL, run_spool, wait_for
from test_pipelines import CI

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("iptables") is None,
                                reason="needs root, ip and iptables for network namespaces")

LEASE_MS = 1500  # an agent silent this long loses its tasks


def sh(*cmd):
    subprocess.run(cmd, check=True, capture_output=True, timeout=30)


class Net:
    """A bridge in the root namespace (the test's own host, 10.a.b.1) and
    hosts in namespaces on it, each with one address."""

    def __init__(self):
        self.tag = "%06x" % random.getrandbits(24)  # names stay under 15 characters
        self.prefix = f"10.{random.randint(64, 250)}.{random.randint(1, 250)}"
        self.bridge = f"spb{self.tag}"
        self.hosts = []
        sh("ip", "link", "add", self.bridge, "type", "bridge")
        sh("ip", "addr", "add", f"{self.prefix}.1/24", "dev", self.bridge)
        sh("ip", "link", "set", self.bridge, "up")

    def host(self, n):
        """Makes host n (n >= 2) and returns (namespace name, address)."""
        ns, veth, addr = f"sp{self.tag}h{n}", f"spv{self.tag}{n}", f"{self.prefix}.{n}"
        sh("ip", "netns", "add", ns)
        self.hosts.append(ns)
        sh("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
        sh("ip", "link", "set", veth, "master", self.bridge, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{addr}/24", "dev", "eth0")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "eth0", "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        return ns, addr

    def cut(self, ns):
        """Drops every packet to and from the host, as a dead switch port would."""
        for chain in ("INPUT", "OUTPUT"):
            sh("ip", "netns", "exec", ns, "iptables", "-I", chain, "!", "-i" if chain == "INPUT" else "-o", "lo",
               "-j", "DROP")

    def restore(self, ns):
        for chain in ("INPUT", "OUTPUT"):
            sh("ip", "netns", "exec", ns, "iptables", "-D", chain, "!", "-i" if chain == "INPUT" else "-o", "lo",
               "-j", "DROP")

    def close(self):
        for ns in self.hosts:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", self.bridge], capture_output=True)


class Agent:
    def __init__(self, fleet, name, ns, slots, cpus, memory_mb, labels=None):
        self.name, self.ns = name, ns
        self.work = tempfile.mkdtemp(prefix=f"spool-agent-{name}-")
        self.stderr_path = os.path.join(self.work + ".stderr")
        self.stderr = open(self.stderr_path, "wb")
        cmd = ["ip", "netns", "exec", ns, SPOOL, "agent", "--server", fleet.url, "--name", name, "--slots", str(slots),
               "--work-dir", self.work, "--cpus", str(cpus), "--memory-mb", str(memory_mb)]
        if labels:
            cmd += ["--labels", labels]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.stderr,
                                     env=dict(ENV, SPOOL_AGENT_TOKEN=fleet.agent_token))

    def log_text(self):
        with open(self.stderr_path, "rb") as f:
            return f.read().decode(errors="replace")

    def stop(self, sig=signal.SIGTERM):
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            self.proc.wait(timeout=30)
        self.stderr.close()
        shutil.rmtree(self.work, ignore_errors=True)


class Fleet(CI):
    """A CI whose server runs on its own host with no local agents."""

    def __init__(self, tmp_path, net):
        self.net = net
        self.server_ns, addr = net.host(2)
        super().__init__(tmp_path, slots=0, extra_args=["--lease-timeout", str(LEASE_MS)], host=addr,
                         wrap=["ip", "netns", "exec", self.server_ns])
        self.agents = {}
        self.next_host = 11
        self.gates = []

    @property
    def url(self):
        return f"http://{self.server.host}:{self.server.port}"

    def start(self):
        super().start()
        p = run_spool("agents", "token", "create", "fleet", data=self.server.data, check=True)
        self.agent_token = json.loads(p.stdout)["token"]
        return self

    def agent(self, name, slots=1, cpus=8, memory_mb=16384, labels=None):
        """Starts `spool agent` on a new host and waits until it is ready."""
        ns, _ = self.net.host(self.next_host)
        self.next_host += 1
        a = Agent(self, name, ns, slots, cpus, memory_mb, labels)
        self.agents[name] = a
        wait_for(lambda: self.node(name) is not None or a.proc.poll() is not None, what=f"agent {name} to register")
        assert a.proc.poll() is None, a.log_text()
        return a

    def nodes(self):
        p = run_spool("nodes", "list", "--json", data=self.server.data, check=True)
        return json.loads(p.stdout)["items"]

    def node(self, name):
        live = [n for n in self.nodes() if n["name"] == name and n["status"] != "down"]
        return live[-1] if live else None

    def gate(self):
        g = tempfile.mktemp(dir="/var/tmp", prefix="spool-gate-")
        self.gates.append(g)
        return g

    def ran_on(self, job_number):
        """The agent that ran the job, from step 0 ("Spool agent V on NAME")."""
        text, _ = self.output(job_number, 0)
        for name in self.agents:
            if f" on {name}\n" in text or text.rstrip().endswith(f" on {name}") or f" on {name} " in text:
                return name
        raise AssertionError(f"no agent named in step 0: {text!r}")

    def events(self, type_):
        p = run_spool("log", "tail", "--json", data=self.server.data, check=True)
        return [e for e in map(json.loads, p.stdout.splitlines()) if e["type"] == type_]

    def close(self):
        for a in self.agents.values():
            a.stop(signal.SIGKILL)
        if self.server.proc is not None:
            self.server.kill()
        for g in self.gates:
            if os.path.exists(g):
                os.unlink(g)


@pytest.fixture
def fleet(tmp_path):
    net = Net()
    f = None
    try:
        f = Fleet(tmp_path, net)
        yield f
    finally:
        if f is not None:
            f.close()
        net.close()


def gated_job(name, gate, cls="small", executor="docker: [{image: cimg/base:stable}]"):
    return (f"  {name}:\n    {executor}\n    resource_class: {cls}\n    steps:\n"
            f"      - run: 'while [ ! -e {gate} ]; do sleep 0.05; done; echo done-{name}'\n")


def push(fleet, jobs, names, branch="main", message="ci"):
    wf = "".join(f"      - {n}\n" for n in names)
    fleet.repo.commit(message, {".circleci/config.yml": f"version: 2.1\njobs:\n{jobs}workflows:\n  main:\n    jobs:\n{wf}"})
    fleet.repo.push(branch)


def job_status(fleet, number, name):
    s, p = fleet.api(f"/api/v2/project/gh/acme/app/pipeline/{number}")
    if s != 200:
        return None
    s, wfs = fleet.api(f"/api/v2/pipeline/{p['id']}/workflow")
    if s != 200 or not wfs["items"]:
        return None
    j = fleet.jobs(wfs["items"][-1]["id"]).get(name)
    return j


def wait_status(fleet, number, name, statuses, timeout=60):
    return wait_for(lambda: (lambda j: j if j and j["status"] in statuses else None)(job_status(fleet, number, name)),
                    timeout=timeout, what=f"job {name} of pipeline {number} to be one of {statuses}")


def allocations(fleet, name):
    n = fleet.node(name)
    return n["allocations"] if n else []


def test_jobs_spread_across_agents_and_fit(fleet):
    fleet.start()
    # Each agent has room for two small jobs (8 CPUs less the 2 it keeps).
    fleet.agent("a1", slots=2, cpus=6, memory_mb=12288)
    fleet.agent("a2", slots=2, cpus=6, memory_mb=12288)
    gate = fleet.gate()
    names = ["j1", "j2", "j3"]
    push(fleet, "".join(gated_job(n, gate) for n in names), names)
    for n in names:
        wait_status(fleet, 1, n, ("running",))
    per_agent = {a: len(allocations(fleet, a)) for a in ("a1", "a2")}
    assert sorted(per_agent.values()) == [1, 2], per_agent  # packed, and spread once one is full
    open(gate, "w").close()
    p, wfs = fleet.wait_pipeline(1)
    jobs = fleet.jobs(wfs[0]["id"])
    assert all(jobs[n]["status"] == "success" for n in names)
    assert {fleet.ran_on(jobs[n]["job_number"]) for n in names} == {"a1", "a2"}
    s, d = fleet.api(f"/api/v2/project/gh/acme/app/job/{jobs['j1']['job_number']}")
    assert d["executor"] == {"type": "docker", "resource_class": "small"}


def test_drain_lets_the_running_job_finish_and_takes_no_new_ones(fleet):
    fleet.start()
    fleet.agent("a1")
    gate = fleet.gate()
    push(fleet, gated_job("long", gate), ["long"])
    wait_status(fleet, 1, "long", ("running",))
    p = run_spool("nodes", "drain", "a1", data=fleet.server.data, check=True)
    assert "a1 is draining" in p.stdout
    node = fleet.node("a1")
    assert node["drain"] is True and len(node["allocations"]) == 1
    push(fleet, gated_job("next", gate), ["next"], message="second")
    wait_for(lambda: (lambda j: j and j["status"] == "queued")(job_status(fleet, 2, "next")), what="next queued")
    s, d = fleet.api(f"/api/v2/project/gh/acme/app/job/{job_status(fleet, 2, 'next')['job_number']}")
    assert d["queue"]["reason"] == "every agent that fits is draining", d["queue"]
    fleet.agent("a2")
    wait_status(fleet, 2, "next", ("running",))
    open(gate, "w").close()
    p, wfs = fleet.wait_pipeline(1)
    first = fleet.jobs(wfs[0]["id"])["long"]
    assert first["status"] == "success" and fleet.ran_on(first["job_number"]) == "a1"
    p, wfs = fleet.wait_pipeline(2)
    second = fleet.jobs(wfs[0]["id"])["next"]
    assert second["status"] == "success" and fleet.ran_on(second["job_number"]) == "a2"
    node = fleet.node("a1")
    assert node["drain"] is True and node["allocations"] == []
    run_spool("nodes", "undrain", "a1", data=fleet.server.data, check=True)
    assert fleet.node("a1")["drain"] is False


def test_sigkill_mid_job_is_an_infrastructure_failure_then_retried_elsewhere(fleet):
    fleet.start()
    a1 = fleet.agent("a1")
    gate = fleet.gate()
    push(fleet, gated_job("victim", gate), ["victim"])
    wait_status(fleet, 1, "victim", ("running",))
    a1.proc.kill()  # SIGKILL: no goodbye; the steps die with it (--die-with-parent)
    a1.proc.wait(timeout=10)
    j = wait_status(fleet, 1, "victim", ("infrastructure_fail",), timeout=30)
    s, d = fleet.api(f"/api/v2/project/gh/acme/app/job/{j['job_number']}")
    assert any("agent" in m["message"] for m in d["messages"]), d["messages"]
    (gone,) = [n for n in fleet.nodes() if n["name"] == "a1"]
    assert gone["status"] == "down" and gone["allocations"] == [], gone

    # Once the project allows it, the next such loss is retried on another agent.
    s, body, _ = fleet.server.request("PATCH", "/api/v2/project/gh/acme/app/settings",
                                      {"spool": {"retry_infrastructure_fail": True}}, admin=True)
    assert s == 200, body
    a3 = fleet.agent("a3")
    push(fleet, gated_job("victim", gate), ["victim"], message="again")
    wait_status(fleet, 2, "victim", ("running",))
    fleet.agent("a4")
    a3.proc.kill()
    a3.proc.wait(timeout=10)
    wait_for(lambda: len(allocations(fleet, "a4")) == 1, what="the task to be retried on a4")
    open(gate, "w").close()
    p, wfs = fleet.wait_pipeline(2)
    j = fleet.jobs(wfs[0]["id"])["victim"]
    assert j["status"] == "success" and fleet.ran_on(j["job_number"]) == "a4"
    s, d = fleet.api(f"/api/v2/project/gh/acme/app/job/{j['job_number']}")
    assert any(m.get("reason") == "retried on another agent" for m in d["messages"]), d["messages"]
    assert len([e for e in fleet.events("job.task_requeued")]) == 1


def test_a_partitioned_agents_late_result_is_not_applied_twice(fleet):
    fleet.start()
    s, body, _ = fleet.server.request("PATCH", "/api/v2/project/gh/acme/app/settings",
                                      {"spool": {"retry_infrastructure_fail": True}}, admin=True)
    assert s == 200, body
    a1 = fleet.agent("a1")
    gate = fleet.gate()
    push(fleet, gated_job("split", gate), ["split"])
    wait_status(fleet, 1, "split", ("running",))
    fleet.agent("a2")
    fleet.net.cut(a1.ns)
    wait_for(lambda: len(allocations(fleet, "a2")) == 1, what="the task to move to a2")
    fleet.net.restore(a1.ns)
    open(gate, "w").close()  # both copies finish now: a1's report comes from a lost lease
    p, wfs = fleet.wait_pipeline(1)
    j = fleet.jobs(wfs[0]["id"])["split"]
    assert j["status"] == "success" and fleet.ran_on(j["job_number"]) == "a2"
    # a1 finishes its copy and reports it; the server refuses the report.
    wait_for(lambda: "lease" in a1.log_text() and a1.proc.poll() is None and fleet.node("a1") is not None,
             timeout=30, what="a1 to be told its lease is gone and to come back")
    finished = [e for e in fleet.events("job.task_finished") if e["body"].get("id") == j["id"]]
    assert len(finished) == 1, finished
    assert len([e for e in fleet.events("job.finished") if e["body"]["id"] == j["id"]]) == 1
    # The returned agent takes work again.
    push(fleet, gated_job("after", gate), ["after"], message="after")
    p, wfs = fleet.wait_pipeline(2)
    assert fleet.jobs(wfs[0]["id"])["after"]["status"] == "success"


def test_cancel_kills_the_process_tree_on_a_remote_agent(fleet):
    fleet.start()
    fleet.agent("a1")
    marker = tempfile.mktemp(dir="/var/tmp", prefix="spool-cancel-")
    fleet.gates.append(marker)
    tag = "spool-cancel-%08x" % random.getrandbits(32)
    jobs = (f"  slow:\n    docker: [{{image: x}}]\n    resource_class: small\n    steps:\n"
            f"      - run: 'sh -c \"sleep 30; echo {tag}\" & sleep 30; touch {marker}'\n")
    push(fleet, jobs, ["slow"])
    wait_status(fleet, 1, "slow", ("running",))
    wait_for(lambda: tag.encode() in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout,
             what="the step's processes")
    s, wfs = fleet.api(f"/api/v2/pipeline/{fleet.pipelines()[0]['id']}/workflow")
    s, body = fleet.api(f"/api/v2/workflow/{wfs['items'][0]['id']}/cancel", "POST")
    assert s == 202, body
    wait_status(fleet, 1, "slow", ("canceled",), timeout=30)
    wait_for(lambda: tag.encode() not in subprocess.run(["ps", "-eo", "args"], capture_output=True).stdout,
             timeout=15, what="every process of the step to be gone")
    assert not os.path.exists(marker)


def test_a_job_waits_for_an_agent_big_enough_and_for_its_os(fleet):
    fleet.start()
    fleet.agent("small", cpus=4, memory_mb=8192)  # keeps 2 CPUs and 4 GB: room for small only
    gate = fleet.gate()
    open(gate, "w").close()
    jobs = gated_job("big", gate, cls="medium") + gated_job("mac", gate, cls="macos.m1.medium.gen1",
                                                          executor="macos: {xcode: 15.4.0}")
    push(fleet, jobs, ["big", "mac"])
    big = wait_status(fleet, 1, "big", ("queued",))
    mac = wait_status(fleet, 1, "mac", ("queued",))
    s, d = fleet.api(f"/api/v2/project/gh/acme/app/job/{big['job_number']}")
    assert d["queue"]["reason"].startswith("no connected agent is big enough"), d["queue"]
    assert d["queue"]["resource_class"] == "docker:medium"
    s, d = fleet.api(f"/api/v2/project/gh/acme/app/job/{mac['job_number']}")
    assert d["queue"]["reason"] == "no connected agent is labelled macos", d["queue"]
    p = run_spool("queue", data=fleet.server.data, check=True)
    assert "docker:medium" in p.stdout and "no connected agent is big enough" in p.stdout
    metrics = fleet.server.get("/metrics")[1].decode()
    assert 'spool_run_queue_depth{resource_class="docker:medium"} 1\n' in metrics
    assert 'spool_run_queue_depth{resource_class="macos:macos.m1.medium.gen1"} 1\n' in metrics
    assert 'spool_agents{status="ready"} 1\n' in metrics or 'spool_agents{status="initializing"} 1\n' in metrics
    fleet.agent("large", cpus=8, memory_mb=16384)
    fleet.agent("mac", labels="macos")
    p, wfs = fleet.wait_pipeline(1)
    jobs = fleet.jobs(wfs[0]["id"])
    assert jobs["big"]["status"] == "success" and fleet.ran_on(jobs["big"]["job_number"]) == "large"
    assert jobs["mac"]["status"] == "success" and fleet.ran_on(jobs["mac"]["job_number"]) == "mac"
    metrics = fleet.server.get("/metrics")[1].decode()
    assert 'spool_run_queue_depth{resource_class="docker:medium"} 0\n' in metrics
    assert "spool_scheduler_placements_total 2\n" in metrics
    assert "spool_run_queue_latency_seconds_count 2\n" in metrics
