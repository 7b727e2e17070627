"""One server per data directory: a second `spool serve` is refused and the
first one goes on untouched."""

import os

from conftest import free_port, run_spool


def test_second_serve_on_the_same_data_dir_exits_1(server, data_dir):
    server.start()
    assert server.append("system.note", {"message": "first"}) == 1
    port = free_port()  # another port, so only the lock can refuse it
    p = run_spool("serve", "--data", str(data_dir), "--listen", f"127.0.0.1:{port}", timeout=60)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "open for writing by another process" in p.stderr, p.stderr
    assert "spool serve" in p.stderr

    # The first server still owns everything, its admin socket included.
    assert os.path.exists(server.sock_path)
    assert server.get("/healthcheck")[0] == 200
    assert server.append("system.note", {"message": "second"}) == 2
    assert server.status()["head_sequence"] == 2
    assert server.proc.poll() is None
