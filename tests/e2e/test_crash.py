"""Crash safety: SIGKILL the server in the middle of concurrent appends,
again and again on the same data directory. Every append that was
acknowledged (201) must survive at its sequence number, the log must stay
contiguous and verifiable, and the views must catch up after each restart."""

import random
import shutil
import signal
import time
from collections import Counter

import pytest

from conftest import Appender, check_log_holds

RUNS = 5  # independent data directories, each with its own seeds
CRASHES_PER_RUN = 8  # SIGKILLs per data directory: RUNS * CRASHES_PER_RUN >= 20
MAX_DELAY_S = 0.3


@pytest.mark.parametrize("run", range(RUNS))
def test_sigkill_during_concurrent_appends_loses_no_acknowledged_append(server, data_dir, run):
    acked_all = []  # acknowledged appends of every round so far
    attempted_all = set()
    server.start()
    for crash in range(CRASHES_PER_RUN):
        seed = 1000 * run + crash
        rng = random.Random(seed)
        threads = rng.randint(4, 8)
        delay = rng.uniform(0, MAX_DELAY_S)
        where = f"run {run}, crash {crash} (seed {seed}, {threads} threads, kill after {delay * 1000:.0f} ms)"

        app = Appender(server.sock_path, f"r{run}c{crash}", threads=threads).start()
        # The crash schedule itself: a random moment into the burst, not a
        # wait for some condition.
        time.sleep(delay)
        app.server_gone.set()
        rc = server.kill()
        app.join()
        assert rc == -signal.SIGKILL, f"{where}: the server had already exited ({rc}): {server.log_text()[-2000:]}"
        assert not app.unexpected, f"{where}: errors before the kill: {app.unexpected[:3]}"
        assert not app.refused, f"{where}: appends refused before the kill: {app.refused[:3]}"
        print(f"{where}: {len(app.acked)} acknowledged")
        acked_all += app.acked
        attempted_all |= app.attempted

        server.start()  # waits for /ready
        events = check_log_holds(data_dir, acked_all, attempted_all)
        head = len(events)
        st = server.wait_caught_up()
        assert st["head_sequence"] == head, where
        for p in st["projections"]:
            assert p["checkpoint"] == head and p["lag"] == 0, (where, p)
        assert sum(st["events_by_type"].values()) == head, where
        assert st["events_by_type"] == dict(Counter(e["type"] for e in events)), where
        assert sum(st["events_by_day"].values()) == head, where

    assert len(acked_all) > 0, "no append was ever acknowledged: the kills came too early to test anything"

    # The views that lived through the crashes equal views rebuilt from the
    # log alone: no event was applied twice or skipped across a crash.
    survived = server.dump_views()
    assert server.stop(signal.SIGTERM) == 0
    shutil.rmtree(data_dir / "views")
    server.start()
    server.wait_caught_up()
    assert server.dump_views() == survived
