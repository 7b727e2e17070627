"""A damaged record is found and named: `spool log verify` fails at its
sequence, and `spool serve` refuses to start instead of serving a log it
cannot read."""

import os
import re
import signal
import subprocess
import time
import uuid

from conftest import log_verify, port_answers, run_spool, spool_popen

EVENTS = 20
TARGET = 7


def flip_record(data_dir, needle):
    """Flips one byte of `needle` wherever it is in the log's data file.
    LMDB copies pages on write, so stale copies of the record's page may
    exist besides the live one; flipping every copy is sure to hit it."""
    path = data_dir / "log" / "data.mdb"
    raw = bytearray(path.read_bytes())
    at = [m.start() for m in re.finditer(re.escape(needle), raw)]
    assert at, "the record's message is not in data.mdb"
    for i in at:
        raw[i + len(needle) // 2] ^= 0x01
    path.write_bytes(raw)
    assert needle not in path.read_bytes()
    return len(at)


def test_flipped_byte_is_named_by_verify_and_blocks_serve(server, data_dir, procs):
    token = uuid.uuid4().hex
    server.start()
    for i in range(1, EVENTS + 1):
        assert server.append("system.note", {"message": f"corruption-{token}-{i:03d}-end"}) == i
    assert server.stop(signal.SIGTERM) == 0
    assert log_verify(data_dir).returncode == 0

    flip_record(data_dir, f"corruption-{token}-{TARGET:03d}-end".encode())

    v = log_verify(data_dir)
    assert v.returncode == 1, (v.returncode, v.stdout, v.stderr)
    assert re.search(rf"FAILED at sequence {TARGET}\b", v.stderr), v.stderr
    assert f"({TARGET - 1} good records before it)" in v.stderr, v.stderr
    assert not v.stdout.startswith("ok")

    # tail prints what is good, then stops at the damage and says where.
    t = run_spool("log", "tail", "--json", "--data", str(data_dir))
    assert t.returncode == 1
    assert len(t.stdout.splitlines()) == TARGET - 1
    assert re.search(rf"sequence {TARGET}\b", t.stderr), t.stderr

    # serve refuses, names the sequence, and never listens meanwhile.
    p = spool_popen("serve", "--data", str(data_dir), "--listen", f"127.0.0.1:{server.port}")
    procs.append(p)
    deadline = time.monotonic() + 60
    answered = False
    while p.poll() is None and time.monotonic() < deadline:
        answered = answered or port_answers(server.port) or os.path.exists(data_dir / "spool.sock")
        time.sleep(0.005)  # a poll interval
    try:
        _, err = p.communicate(timeout=max(0.1, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        raise AssertionError("spool serve neither refused nor stopped on a damaged log")
    err = err.decode()
    assert p.returncode == 1, (p.returncode, err)
    assert "refusing to start" in err and re.search(rf"sequence {TARGET}\b", err), err
    assert not answered, "the server listened on a damaged log"
    assert not port_answers(server.port)
    assert not os.path.exists(data_dir / "spool.sock")
