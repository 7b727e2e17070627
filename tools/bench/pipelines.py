#!/usr/bin/env python3
"""Pipeline benchmarks of issue 3, against the real release binary.

  tools/bench/pipelines.py [--pushes 200] [--lines 1000000]

1. 200 pushes (one `git push` of 200 branches; the post-receive hook posts
   one signed webhook per branch, as GitHub would) of a one-job config
   whose step is `true`, with 2 local slots: webhook accepted (the
   pipeline.created event) to step started (the job's first step event),
   p50 and p99, and jobs finished per second.
2. One job printing 1,000,000 lines of 80 bytes: time from the job's
   start (and from the trigger) to its end, bytes stored for its output
   (the compressed chunks in the log), and the server's peak RSS growth.
3. Idle RSS of `spool serve` and the time from exec to serving.

Times come from the log's own event timestamps, so client-side noise
does not enter. Targets are printed next to each figure.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tests", "e2e"))
SPOOL = os.path.join(ROOT, "zig-out", "bin", "spool")
os.environ.setdefault("SPOOL_BIN", SPOOL)

from conftest import Server, wait_for  # noqa: E402
from gitrepo import Repo, git  # noqa: E402

SECRET = "bench-secret"


def verdict(name, value, target, ok, unit=""):
    print(f"target  {name:<52} {value}{unit}  (target {target})  {'MET' if ok else 'MISSED'}")


def rss_kb(pid, field="VmRSS"):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def events(data):
    p = subprocess.run([SPOOL, "log", "tail", "--json", "--data", data], capture_output=True, text=True, check=True)
    return [json.loads(line) for line in p.stdout.splitlines()]


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def setup(tmp, slots, config):
    repo = Repo(os.path.join(tmp, "git"))
    server = Server(os.path.join(tmp, "data"), slots=slots)
    server.start()
    s, b, _ = server.request("POST", "/api/v2/project", {"slug": "gh/acme/app", "vcs_url": repo.url,
                                                         "webhook_secret": SECRET}, admin=True)
    assert s == 201, b
    repo.hook(f"http://127.0.0.1:{server.port}", SECRET)
    repo.commit("bench", {".circleci/config.yml": config})
    return repo, server


def wait_jobs(server, n, timeout):
    def done():
        st = server.status()
        return st["events_by_type"].get("job.finished", 0) >= n and all(p["lag"] == 0 for p in st["projections"])
    wait_for(done, timeout=timeout, what=f"{n} jobs to finish")


def post_webhooks(server, repo, n, senders=8):
    """Posts n signed push webhooks for branches b0.. from concurrent
    senders, as GitHub delivers them (in parallel, not one by one)."""
    import hashlib, hmac, threading, uuid
    import http.client
    sha = git(repo.work, "rev-parse", "HEAD")

    def send(idx):
        for i in idx:
            body = json.dumps({"ref": f"refs/heads/c{i}", "after": sha, "head_commit": {"id": sha, "message": "x"},
                               "repository": {"full_name": "acme/app"}, "pusher": {"name": "bench"}})
            sig = "sha256=" + hmac.new(SECRET.encode(), body.encode(), hashlib.sha256).hexdigest()
            c = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
            c.request("POST", "/webhooks/github", body, {"X-GitHub-Event": "push", "X-GitHub-Delivery": str(uuid.uuid4()),
                                                         "X-Hub-Signature-256": sig})
            assert c.getresponse().status == 201
            c.close()
    ts = [threading.Thread(target=send, args=(range(k, n, senders),)) for k in range(senders)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()


def job_figures(evs, skip_pipelines):
    created, first_step, finished, job_pipeline = {}, {}, {}, {}
    order = []
    for e in evs:
        b, t = e["body"], e["time_ns"]
        if e["type"] == "pipeline.created":
            created[b["id"]] = t
            order.append(b["id"])
        elif e["type"] == "workflow.created":
            for j in b["jobs"]:
                job_pipeline[j["id"]] = b["pipeline_id"]
        elif e["type"] == "job.step_started":
            first_step.setdefault(b["id"], t)
        elif e["type"] == "job.finished":
            finished[b["id"]] = t
    keep = set(order[skip_pipelines:])
    jobs = [j for j, p in job_pipeline.items() if p in keep and j in finished and j in first_step]
    lat = [(first_step[j] - created[job_pipeline[j]]) / 1e6 for j in jobs]
    start = min(created[job_pipeline[j]] for j in jobs)
    end = max(finished[j] for j in jobs)
    return lat, len(jobs) / ((end - start) / 1e9), len(jobs), (end - start) / 1e9


def bench_pushes(pushes):
    print(f"\n1. {pushes} pushes of a one-job config (step `true`), 2 local slots")
    config = "version: 2.1\njobs:\n  build:\n    docker: [{image: cimg/base:stable}]\n    steps: [{run: 'true'}]\n"
    tmp = tempfile.mkdtemp(prefix="spool-bench-")
    try:
        repo, server = setup(tmp, 2, config)
        # Warm the server's mirror and the agents with one pipeline first.
        repo.push("main")
        wait_jobs(server, 1, 60)
        for i in range(pushes):
            git(repo.work, "branch", f"b{i}")
        t0 = time.monotonic()
        repo.push("--all")
        push_s = time.monotonic() - t0
        wait_jobs(server, pushes + 1, 300)
        # Then the same number of webhooks as GitHub sends them: in parallel.
        post_webhooks(server, repo, pushes)
        wait_jobs(server, 2 * pushes + 1, 300)
        evs = events(server.data)
        server.stop()
        lat, _, njobs, _ = job_figures(evs[: next(i for i, e in enumerate(evs) if e["type"] == "pipeline.created"
                                                  and e["body"]["number"] == pushes + 2)], 1)
        _, jobs_s, njobs2, span = job_figures(evs, pushes + 1)
        statuses = repo.hook_statuses()
        print(f"   git push of {pushes} branches (the hook posts {pushes} webhooks one by one): {push_s:.2f} s; "
              f"webhook answers: {sorted(set(statuses))}")
        p50, p99 = statistics.median(lat), percentile(lat, 99)
        print(f"   webhook accepted -> step started: p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {max(lat):.1f} ms "
              f"({len(lat)} jobs)")
        print(f"   {pushes} webhooks from 8 parallel senders: {jobs_s:.1f} jobs finished per second "
              f"({njobs2} jobs in {span:.2f} s, first webhook to last job end)")
        verdict("webhook to step start p50", f"{p50:.1f}", "<= 20 ms", p50 <= 20, " ms")
        verdict("webhook to step start p99", f"{p99:.1f}", "<= 80 ms", p99 <= 80, " ms")
        verdict("jobs finished per second", f"{jobs_s:.1f}", ">= 50", jobs_s >= 50)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_big_output(lines):
    print(f"\n2. one job printing {lines} lines of 80 bytes")
    # 79 digits and a newline per line; every line differs, as real logs do.
    cmd = f"seq {lines} | awk '{{printf \"%079d\\n\", $1}}'"
    config = ("version: 2.1\njobs:\n  build:\n    docker: [{image: cimg/base:stable}]\n"
              f"    steps: [{{run: {json.dumps(cmd)}}}]\n")
    tmp = tempfile.mkdtemp(prefix="spool-bench-")
    try:
        repo, server = setup(tmp, 1, config)
        pid = server.proc.pid
        idle = rss_kb(pid)
        repo.push("main")
        wait_jobs(server, 1, 120)
        peak = rss_kb(pid, "VmHWM")
        evs = events(server.data)
        server.stop()
        t = {}
        stored = raw_lines = 0
        for e in evs:
            b = e["body"]
            if e["type"] in ("pipeline.created", "job.started", "job.finished") and e["type"] not in t:
                t[e["type"]] = e["time_ns"]
            if e["type"] == "job.output":
                stored += b["data"]["binary_bytes"]
                raw_lines += b["lines"]
            if e["type"] == "job.finished":
                status = b["status"]
        run_s = (t["job.finished"] - t["job.started"]) / 1e9
        total_s = (t["job.finished"] - t["pipeline.created"]) / 1e9
        growth = (peak - idle) / 1024
        print(f"   job status {status}; {raw_lines} lines stored")
        print(f"   job started -> finished: {run_s:.2f} s; webhook -> job finished: {total_s:.2f} s")
        print(f"   output stored: {stored / 1e6:.2f} MB (zstd chunks in the log)")
        print(f"   server RSS: idle {idle / 1024:.1f} MB, peak {peak / 1024:.1f} MB (growth {growth:.1f} MB)")
        verdict("1M-line job finished (webhook to end)", f"{total_s:.2f}", "<= 1.5 s", total_s <= 1.5, " s")
        verdict("output bytes stored", f"{stored / 1e6:.2f}", "<= 2.7 MB", stored <= 2.7e6, " MB")
        verdict("server peak RSS growth", f"{growth:.1f}", "<= 50 MB", growth <= 50, " MB")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def bench_start():
    print("\n3. start-up and idle memory of spool serve (2 local slots)")
    starts, idles = [], []
    for _ in range(5):
        tmp = tempfile.mkdtemp(prefix="spool-bench-")
        try:
            import socket
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                port = s.getsockname()[1]
            t0 = time.monotonic()
            p = subprocess.Popen([SPOOL, "serve", "--data", os.path.join(tmp, "data"), "--listen",
                                  f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
            import http.client
            deadline = t0 + 10
            while time.monotonic() < deadline:
                try:
                    c = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    c.request("GET", "/health-check")
                    if c.getresponse().status == 200:
                        break
                except OSError:
                    time.sleep(0.0005)  # polling interval
            starts.append((time.monotonic() - t0) * 1000)
            # idle: let the local agents register and settle
            wait_for(lambda: b"agent.registered" in subprocess.run(
                [SPOOL, "log", "tail", "--data", os.path.join(tmp, "data")], capture_output=True).stdout, timeout=10)
            time.sleep(0.5)  # an idle period, not a wait for an event
            idles.append(rss_kb(p.pid) / 1024)
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=30)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    start, idle = statistics.median(starts), statistics.median(idles)
    print(f"   exec to serving /health-check: median {start:.1f} ms (runs: {', '.join(f'{x:.1f}' for x in starts)})")
    print(f"   idle RSS: median {idle:.1f} MB (runs: {', '.join(f'{x:.1f}' for x in idles)})")
    verdict("start to serving", f"{start:.1f}", "<= 30 ms", start <= 30, " ms")
    verdict("idle RSS", f"{idle:.1f}", "<= 10 MB", idle <= 10, " MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--pushes", type=int, default=200)
    ap.add_argument("--lines", type=int, default=1000000)
    a = ap.parse_args()
    print(f"spool pipeline benchmarks: {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}")
    bench_pushes(a.pushes)
    bench_big_output(a.lines)
    bench_start()


if __name__ == "__main__":
    main()
