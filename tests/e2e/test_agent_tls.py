"""A remote `spool agent` that reaches the server over https: the real
server behind a TLS-terminating proxy (Python's ssl, with a CA and a
certificate for "localhost" made by the openssl command), a real agent,
a real job. An agent that does not trust the CA, or that names the server
by an address the certificate does not cover, never registers."""

import asyncio
import json
import os
import shutil
import signal
import ssl
import subprocess
import threading

import pytest

from conftest import ENV, SPOOL, run_spool, wait_for
from test_pipelines import CI

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None or shutil.which("bwrap") is None,
                                reason="needs the openssl command and bubblewrap")


def make_certs(d):
    def sh(*cmd):
        subprocess.run(cmd, cwd=d, check=True, capture_output=True, timeout=60)
    sh("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
       "-subj", "/CN=spool-e2e-ca")
    sh("openssl", "req", "-newkey", "rsa:2048", "-nodes", "-keyout", "srv.key", "-out", "srv.csr", "-subj",
       "/CN=localhost")
    with open(os.path.join(d, "ext"), "w") as f:
        f.write("subjectAltName=DNS:localhost\n")
    sh("openssl", "x509", "-req", "-in", "srv.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-out",
       "srv.pem", "-days", "2", "-extfile", "ext")


class TLSProxy:
    """Accepts TLS on 127.0.0.1 and forwards the plain bytes to the server."""

    def __init__(self, cert, key, backend_port):
        self.ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ctx.load_cert_chain(cert, key)
        self.backend_port = backend_port
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(ready,), daemon=True)
        self.thread.start()
        assert ready.wait(10)

    def _run(self, ready):
        asyncio.set_event_loop(self.loop)
        self.srv = self.loop.run_until_complete(asyncio.start_server(self._conn, "127.0.0.1", 0, ssl=self.ctx))
        self.port = self.srv.sockets[0].getsockname()[1]
        ready.set()
        self.loop.run_forever()

    async def _conn(self, cr, cw):
        br, bw = await asyncio.open_connection("127.0.0.1", self.backend_port)

        async def pump(r, w):
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, ssl.SSLError):
                pass
            finally:
                w.close()
        await asyncio.gather(pump(cr, bw), pump(br, cw))

    def close(self):
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


def start_agent(url, token, work, env_extra):
    env = dict(ENV, SPOOL_AGENT_TOKEN=token, **env_extra)
    work.mkdir()
    p = subprocess.Popen([SPOOL, "agent", "--server", url, "--name", "tls", "--work-dir", str(work / "w"),
                          "--cpus", "8", "--memory-mb", "16384"],
                         stdout=subprocess.DEVNULL, stderr=open(work / "stderr", "wb"), env=env)
    p.log = lambda: (work / "stderr").read_text(errors="replace")
    return p


def test_agent_runs_a_job_over_https_and_checks_the_certificate(tmp_path):
    certs = tmp_path / "certs"
    certs.mkdir()
    make_certs(certs)
    ci = CI(tmp_path, slots=0).start()
    proxy = TLSProxy(str(certs / "srv.pem"), str(certs / "srv.key"), ci.server.port)
    agents = []
    try:
        token = json.loads(run_spool("agents", "token", "create", "tls", data=ci.server.data, check=True).stdout)["token"]
        untrusted = {"SSL_CERT_FILE": "/dev/null", "SSL_CERT_DIR": str(tmp_path / "empty")}
        trusted = {"SSL_CERT_FILE": str(certs / "ca.pem")}
        # Refused: an unknown CA, and an address the certificate does not name.
        bad = [start_agent(f"https://localhost:{proxy.port}", token, tmp_path / "w1", untrusted),
               start_agent(f"https://127.0.0.1:{proxy.port}", token, tmp_path / "w2", trusted)]
        agents += bad
        for a in bad:
            wait_for(lambda: "cannot register yet" in a.log(), what="a refused agent to give up a first time")
            assert "TLS with " in a.log(), a.log()
        # Accepted: trusts the CA and names the server as the certificate does.
        good = start_agent(f"https://localhost:{proxy.port}/", token, tmp_path / "w3", trusted)
        agents.append(good)
        ci.repo.commit("ci", {".circleci/config.yml": "version: 2.1\njobs:\n  build:\n"
                                                      "    docker: [{image: cimg/base:stable}]\n"
                                                      "    steps:\n      - run: echo over-tls-$((6*7))\n"})
        ci.repo.push("main")
        p, wfs = ci.wait_pipeline(1)
        jobs = ci.jobs(wfs[0]["id"])
        assert jobs["build"]["status"] == "success"
        text, _ = ci.output(jobs["build"]["job_number"], 101)
        assert "over-tls-42" in text
        nodes = json.loads(run_spool("nodes", "list", "--json", data=ci.server.data, check=True).stdout)["items"]
        assert [n["name"] for n in nodes] == ["tls"]  # the two refused agents never registered
        for a in bad:
            assert a.poll() is None  # they keep trying, as after any network failure
            a.send_signal(signal.SIGTERM)
            assert a.wait(timeout=30) == 0, a.log()
    finally:
        for a in agents:
            if a.poll() is None:
                a.kill()
                a.wait(timeout=30)
        proxy.close()
        ci.server.stop()
