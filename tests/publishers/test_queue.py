# The durable queue every publisher shares: batches in order, a damaged one
# left in place (with one warning) while the others go, counts for `status`.

from __future__ import annotations

import logging

from reportupdater.publishers.queue import DurableQueue


def test_batches_in_order_and_counted(tmp_path):
    queue = DurableQueue("tables", tmp_path / "output", tmp_path / "queries")
    assert queue.files() == [] and queue.size() == 0
    first = queue.add([{"a": 1}], {"count": 5})
    second = queue.add([{"a": 2}, {"a": 3}])
    assert queue.add([]) is None
    assert queue.files() == [first, second]
    assert first.parent.parent == tmp_path / "output" / ".tables-queue"
    assert queue.size() == 5 + 2
    queue.done(first)
    assert queue.files() == [second]


def test_damaged_batch_left_in_place(tmp_path, caplog):
    queue = DurableQueue("prometheus", tmp_path / "output", tmp_path / "queries")
    good = queue.add([[[["__name__", "m"]], 0, 1.0]])  # one sample
    bad = good.with_name("00000000T000000000000-1-000000.json")  # sorts first
    bad.write_text('{"format": 1, "items": [')  # cut short
    with caplog.at_level(logging.WARNING):
        assert queue.read(bad) is None
        assert queue.read(bad) is None
    assert sum("not read" in record.message for record in caplog.records) == 1
    assert queue.read(good)["items"] == [[[["__name__", "m"]], 0, 1.0]]
    assert queue.size() == 1 and bad.exists()


def test_each_query_folder_has_its_own_queue(tmp_path):
    one = DurableQueue("tables", tmp_path / "output", tmp_path / "a")
    two = DurableQueue("tables", tmp_path / "output", tmp_path / "b")
    one.add([1])
    assert two.files() == [] and one.folder != two.folder
