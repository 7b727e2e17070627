"""`spool agent --docker-socket` as a process, against a real podman API
service (`podman system service`, private storage under the test's
directory, an image built here from busybox-static: nothing is pulled)
and a real `spool serve` without local agents.

- the agent advertises the label "docker" and runs a docker task with a
  primary and a service container, then removes them;
- containers left behind by an agent that was killed outright are
  removed when an agent with the same work directory starts;
- a socket where nothing answers stops the agent at start, saying why.

The executor's semantics in depth (env, exit codes, streams, timeouts,
cancel, missing images) are in tests/agent/test_docker.c."""

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import urllib.parse

import pytest

from conftest import ENV, SPOOL, run_spool, wait_for

IMAGE = "localhost/spool-e2e-busybox:1"

pytestmark = pytest.mark.skipif(shutil.which("podman") is None or shutil.which("busybox") is None,
                                reason="podman or busybox-static is not installed (tools/dev/bootstrap installs them)")


class UnixHTTP(http.client.HTTPConnection):
    def __init__(self, path, timeout=30):
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)


class Podman:
    """A private `podman system service`."""

    def __init__(self, home):
        self.home = home
        # Socket and runroot paths must stay short (unix sockets).
        self.run = tempfile.mkdtemp(prefix="spe2e-", dir="/tmp")
        self.socket = os.path.join(self.run, "api.sock")
        conf = os.path.join(home, "containers.conf")
        sconf = os.path.join(home, "storage.conf")
        with open(conf, "w") as f:
            # runc: crun refuses this machine's hybrid cgroups; the default
            # nofile limit (1048576) cannot be set here.
            f.write('[containers]\ndefault_ulimits = ["nofile=1024:1024", "nproc=1024:1024"]\n'
                    f'[engine]\nruntime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "file"\n'
                    f'tmp_dir = "{self.run}/tmp"\nvolume_path = "{home}/volumes"\nstatic_dir = "{home}/libpod"\n')
        with open(sconf, "w") as f:
            f.write(f'[storage]\ndriver = "vfs"\nrunroot = "{self.run}/run"\ngraphroot = "{home}/graph"\n')
        self.env = dict(os.environ, CONTAINERS_CONF=conf, CONTAINERS_STORAGE_CONF=sconf)
        self.proc = None

    def build_image(self):
        root = os.path.join(self.home, "rootfs")
        os.makedirs(os.path.join(root, "bin"))
        for d in ("etc", "root", "tmp"):
            os.makedirs(os.path.join(root, d))
        os.chmod(os.path.join(root, "tmp"), 0o1777)
        bb = shutil.which("busybox")
        shutil.copy(bb, os.path.join(root, "bin", "busybox"))
        applets = subprocess.run([bb, "--list"], capture_output=True, text=True, check=True).stdout.split()
        for a in applets:
            if a != "busybox":
                os.symlink("busybox", os.path.join(root, "bin", a))
        with open(os.path.join(root, "etc", "passwd"), "w") as f:
            f.write("root:x:0:0:root:/root:/bin/sh\n")
        tar = os.path.join(self.home, "busybox.tar")
        subprocess.run(["tar", "-C", root, "-cf", tar, "."], check=True)
        subprocess.run(["podman", "import", "-q", tar, IMAGE], env=self.env, check=True, capture_output=True,
                       timeout=120)

    def start(self):
        self.log = open(os.path.join(self.home, "service.log"), "w")
        self.proc = subprocess.Popen(["podman", "system", "service", "--time=0", "unix://" + self.socket],
                                     env=self.env, stdout=self.log, stderr=subprocess.STDOUT)
        wait_for(lambda: self.ping(), timeout=30, what="podman system service")

    def ping(self):
        try:
            return self.request("GET", "/_ping")[0] == 200
        except OSError:
            return False

    def request(self, method, path, body=None):
        c = UnixHTTP(self.socket)
        try:
            c.request(method, "/v1.41" + path, body=json.dumps(body) if body is not None else None,
                      headers={"Content-Type": "application/json"} if body is not None else {})
            r = c.getresponse()
            data = r.read()
            return r.status, (json.loads(data) if data and r.getheader("Content-Type", "").startswith(
                "application/json") else data)
        finally:
            c.close()

    def containers(self, label):
        q = urllib.parse.quote(json.dumps({"label": [label]}))
        status, body = self.request("GET", f"/containers/json?all=true&filters={q}")
        assert status == 200, body
        return body

    def stop(self):
        if self.proc is not None:
            # Whatever a failed test left: running containers would keep
            # mounts under the test's directory.
            try:
                _, left = self.request("GET", "/containers/json?all=true")
                for c in left if isinstance(left, list) else []:
                    self.request("DELETE", f"/containers/{c['Id']}?force=true")
            except OSError:
                pass
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.log.close()
        # podman keeps a conmon per exec session for 5 minutes (exit-delay
        # 300): those of this service (its run directory is in their
        # arguments) go now.
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    args = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if args.startswith("/usr/bin/conmon ") and self.run in args:
                try:
                    os.kill(int(pid), signal.SIGKILL)
                except OSError:
                    pass
        shutil.rmtree(self.run, ignore_errors=True)


@pytest.fixture
def podman(tmp_path):
    home = tmp_path / "podman"
    home.mkdir()
    pm = Podman(str(home))
    try:
        pm.build_image()
        pm.start()
        yield pm
    finally:
        pm.stop()


SERVICE = ("      - image: " + IMAGE + "\n        name: web\n        command: [\"/bin/sh\", \"-c\", "
           "\"mkdir -p /www && echo up >/www/index.html && exec httpd -f -p 8080 -h /www\"]\n")


def docker_config(steps):
    runs = "".join(f"      - run: {json.dumps(c)}\n" for c in steps)
    return (f"version: 2.1\njobs:\n  build:\n    docker:\n      - image: {IMAGE}\n{SERVICE}"
            f"    steps:\n{runs}workflows:\n  main:\n    jobs: [build]\n")


@pytest.fixture
def dci(tmp_path):
    from test_pipelines import CI
    c = CI(tmp_path, slots=0).start()
    c.agent_token = json.loads(run_spool("agents", "token", "create", "docker", data=c.server.data,
                                         check=True).stdout)["token"]
    yield c
    if c.server.proc is not None:
        c.server.kill()


def start_agent(tmp_path, dci, podman_socket, *extra):
    args = [SPOOL, "agent", "--server", f"http://{dci.server.host}:{dci.server.port}", "--work-dir",
            str(tmp_path / "work"), "--name", "e2e-docker", "--docker-socket", podman_socket, "--cpus", "8",
            "--memory-mb", "16384", *extra]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env=dict(ENV, SPOOL_AGENT_TOKEN=dci.agent_token), text=True)


def build_steps(dci, number=1):
    """{step: (status, exit_code)} of pipeline number's build job, once it has a workflow."""
    s, p = dci.api(f"/api/v2/project/gh/acme/app/pipeline/{number}")
    if s != 200:
        return None
    s, wfs = dci.api(f"/api/v2/pipeline/{p['id']}/workflow")
    if s != 200 or not wfs["items"]:
        return None
    job = dci.jobs(wfs["items"][0]["id"])["build"]
    if "job_number" not in job:
        return None
    s, build = dci.api(f"/api/v1.1/project/gh/acme/app/{job['job_number']}")
    return {st["actions"][0]["step"]: (st["actions"][0]["status"], st["actions"][0].get("exit_code"))
            for st in build["steps"]} if s == 200 else None


def test_agent_docker_runs_a_task_in_containers(tmp_path, dci, podman):
    steps = ["test \"$(id -u)\" = 0 && test -d \"$CIRCLE_WORKING_DIRECTORY\"",
             "for i in $(seq 100); do wget -qO- http://web:8080/ && exit 0; sleep 0.1; done; exit 1",
             "exit 4"]
    dci.repo.commit("ci", {".circleci/config.yml": docker_config(steps)})
    dci.repo.push("main")
    p = start_agent(tmp_path, dci, podman.socket, "--once")
    try:
        rc = p.wait(timeout=120)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read()
    assert rc == 0, err
    nodes = json.loads(run_spool("nodes", "list", "--json", data=dci.server.data, check=True).stdout)["items"]
    assert "docker" in nodes[0]["labels"], nodes
    _, wfs = dci.wait_pipeline(1)
    assert dci.jobs(wfs[0]["id"])["build"]["status"] == "failed", err
    assert build_steps(dci) == {0: ("success", 0), 99: ("success", 0), 101: ("success", 0), 102: ("success", 0),
                                103: ("failed", 4)}
    assert podman.containers("spool.work_dir=" + os.path.realpath(tmp_path / "work")) == []
    assert [d for d in os.listdir(tmp_path / "work") if os.path.isdir(tmp_path / "work" / d)] == []


def test_agent_docker_removes_containers_left_by_a_killed_agent(tmp_path, dci, podman):
    dci.repo.commit("ci", {".circleci/config.yml": docker_config(["echo started; sleep 1000"])})
    dci.repo.push("main")
    p = start_agent(tmp_path, dci, podman.socket)
    try:
        wait_for(lambda: 101 in (build_steps(dci) or {}), timeout=60, what="step 101 to start")
    finally:
        p.kill()  # SIGKILL: no teardown
        p.wait()
    work = os.path.realpath(tmp_path / "work")
    assert len(podman.containers("spool.work_dir=" + work)) == 2
    p = start_agent(tmp_path, dci, podman.socket)
    try:
        wait_for(lambda: podman.containers("spool.work_dir=" + work) == [], timeout=60,
                 what="the leftover containers to be removed")
        p.send_signal(signal.SIGTERM)
        rc = p.wait(timeout=60)
    finally:
        if p.poll() is None:
            p.kill()
    err = p.stderr.read()
    assert rc == 0, err
    assert "left behind by an earlier agent" in err


def test_agent_docker_socket_that_does_not_answer(tmp_path):
    p = run_spool("agent", "--server", "unix:/nope", "--token", "x", "--work-dir", str(tmp_path / "w"),
                  "--docker-socket", str(tmp_path / "no.sock"))
    assert p.returncode == 1
    assert "Docker API does not answer" in p.stderr and "no.sock" in p.stderr


CONFIG = f"""\
version: 2.1
jobs:
  build:
    docker:
      - image: {IMAGE}
        environment: {{IN_PRIMARY: yes-primary}}
      - image: {IMAGE}
        name: web
        command: ["/bin/sh", "-c", "mkdir -p /www && echo from-web >/www/index.html && exec httpd -f -p 8080 -h /www"]
    environment: {{GREETING: hello}}
    steps:
      - checkout
      - run: cat README.md && echo "$GREETING $IN_PRIMARY in $CIRCLE_WORKING_DIRECTORY"
      - run: for i in $(seq 100); do wget -qO- http://web:8080/ && exit 0; sleep 0.1; done; exit 1
workflows:
  main:
    jobs: [build]
"""


def test_serve_runs_a_docker_job_on_a_docker_agent(tmp_path, podman):
    """The whole path: a push, the server's TASK with executor.images, a
    separate `spool agent --docker-socket` (the server has no local
    agents), output through the API, and no container left."""
    from test_pipelines import CI

    # The agent advertises its CPUs minus the two it keeps for itself: on
    # a small machine that is one, so the class must fit in one.
    conf = tmp_path / "spool.json"
    conf.write_text(json.dumps({"resource_classes": {"docker": {"medium": {"cpu": 1, "ram_mb": 1024}}}}))
    ci = CI(tmp_path, slots=0, extra_args=("--config", str(conf))).start()
    agent = None
    try:
        s, body, _ = ci.server.request("POST", "/admin/tokens", {"name": "docker-agent", "role": "agent"}, admin=True)
        assert s == 201, body
        token = json.loads(body)["token"]
        # Where the agent can be told its size, a size that fits the class
        # whatever reserve the server keeps.
        size = ["--cpus", "8", "--memory-mb", "16384"] if "--cpus" in run_spool("agent", "--help").stdout else []
        agent = subprocess.Popen([SPOOL, "agent", "--server", f"http://{ci.server.host}:{ci.server.port}",
                                  "--work-dir", str(tmp_path / "work"), "--name", "docker-1", "--docker-socket",
                                  podman.socket, *size], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                 env=dict(ENV, SPOOL_AGENT_TOKEN=token), text=True)
        ci.repo.commit("Docker CI", {".circleci/config.yml": CONFIG, "README.md": "readme-text\n"})
        ci.repo.push("main")
        p, wfs = ci.wait_pipeline(1, timeout=120)
        jobs = ci.jobs(wfs[0]["id"])
        n = jobs["build"]["job_number"]
        text, action = ci.output(n, 102)
        assert "readme-text" in text and "hello yes-primary in " in text, text
        assert action["status"] == "success"
        text, action = ci.output(n, 103)
        assert "from-web" in text and action["status"] == "success", text
        spin, _ = ci.output(n, 0)
        assert "Executor: docker" in spin and "Started service container" in spin, spin
        assert jobs["build"]["status"] == "success"
        assert podman.containers("spool.work_dir=" + os.path.realpath(tmp_path / "work")) == []
    except AssertionError:
        if agent is not None:
            agent.kill()
            print("agent:", agent.communicate()[1][-4000:])
        print("server:", ci.server.log_text()[-4000:])
        raise
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(timeout=60)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait()
        ci.server.kill()
