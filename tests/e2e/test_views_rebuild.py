"""Views are derived data: deleting <data>/views and restarting rebuilds
them from the log, identical to what they were."""

import shutil
import signal
from concurrent.futures import ThreadPoolExecutor

NOTES = 240
MARKS = 120


def parse_dump(text):
    """{table: {key bytes: value bytes}} from the text dump."""
    tables = {}
    for line in text.splitlines():
        table, key, value = line.split("\t")
        tables.setdefault(table, {})[bytes.fromhex(key)] = bytes.fromhex(value)
    return tables


def append_many(server):
    def one(i):
        if i % 3 == 2:
            return server.append("system.mark", {"label": f"mark-{i}", "detail": {"i": i, "even": i % 2 == 0}})
        return server.append("system.note", {"message": f"note-{i}"})

    with ThreadPoolExecutor(max_workers=4) as pool:
        return list(pool.map(one, range(NOTES + MARKS)))


def test_deleting_views_rebuilds_identical_views(server, data_dir):
    server.start()
    seqs = append_many(server)
    assert sorted(seqs) == list(range(1, NOTES + MARKS + 1))
    before = server.wait_caught_up()
    assert before["head_sequence"] == NOTES + MARKS
    assert before["events_by_type"] == {"system.mark": MARKS, "system.note": NOTES}
    dump_before = server.dump_views()

    tables = parse_dump(dump_before)
    counts = {k.decode(): int.from_bytes(v, "big") for k, v in tables["counts.type"].items()}
    assert counts == {"system.mark": MARKS, "system.note": NOTES}
    assert sum(int.from_bytes(v, "big") for v in tables["counts.day"].values()) == NOTES + MARKS
    assert "_proj" not in tables, "checkpoints are not part of the dump"

    assert server.stop(signal.SIGTERM) == 0
    views = data_dir / "views"
    assert views.is_dir()
    shutil.rmtree(views)

    server.start()  # waits for /ready: the rebuild has caught up with the log
    after = server.wait_caught_up()
    assert (data_dir / "views").is_dir()
    dump_after = server.dump_views()
    assert dump_after, "the rebuilt views are empty"
    assert dump_after == dump_before
    for key in ("head_sequence", "events_by_type", "events_by_day"):
        assert after[key] == before[key], key
    assert after["projections"] == before["projections"]


def test_restart_without_deleting_views_resumes_from_the_checkpoint(server, data_dir):
    server.start()
    for i in range(30):
        server.append("system.note", {"message": f"n{i}"})
    before = server.wait_caught_up()
    dump_before = server.dump_views()
    assert server.stop(signal.SIGTERM) == 0
    server.start()
    # The counts are not applied twice.
    after = server.wait_caught_up()
    assert after["events_by_type"] == before["events_by_type"] == {"system.note": 30}
    assert server.dump_views() == dump_before
    # New events keep counting on top.
    server.append("system.mark", {"label": "after-restart"})
    assert server.status()["events_by_type"] == {"system.mark": 1, "system.note": 30}
