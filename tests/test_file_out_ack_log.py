"""file-out's ack log (`<path>.ack`): the unacknowledged tail is cut at start, and a message
whose ack may not have gone out before a crash is recognised when it comes again.

A crash is simulated by closing the gear's files without stop() (no last record), then starting
a new instance on the same path, as the mixer does after kill -9.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from fluxmix.gears import file_out
from fluxmix.gears.ack_log import AckRecord, ack_log_path, read_ack_log, truncate_unacknowledged
from fluxmix.gears.file_out import FileOut
from fluxmix.gears.testing import GearHarness


def crash(h: GearHarness) -> None:
    """kill -9 as far as the files are concerned: no stop(), nothing more recorded."""
    gear = h.gear
    assert isinstance(gear, FileOut)
    gear._close()


def ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


async def test_unacknowledged_tail_is_cut_and_redelivery_writes_it_once(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    config = {"path": str(path), "envelope": True}
    h = GearHarness("file-out", config)
    await h.start()
    await h.send({"seq": 1}, id="a")
    await h.send({"seq": 2}, id="b")  # flushed: recorded, so acked
    await h.send({"seq": 3}, id="c", flush=False)  # handled, written, never flushed nor acked
    await h.send({"seq": 4}, id="d", flush=False)
    crash(h)
    assert ids(path) == ["a", "b", "c", "d"]

    async with GearHarness("file-out", config) as again:
        assert ids(path) == ["a", "b"]  # cut at start, before anything is redelivered
        assert again.gear.cut_bytes > 0  # type: ignore[attr-defined]
        for seq, mid in ((3, "c"), (4, "d"), (5, "e")):  # the wire redelivers c, d, then e is new
            await again.send({"seq": seq}, id=mid)
    assert ids(path) == ["a", "b", "c", "d", "e"]


async def test_plain_bodies_are_cut_too_and_the_file_holds_only_bodies(tmp_path: Path) -> None:
    """Without envelope the file has no ids at all: the offset alone does the work."""
    path = tmp_path / "out.jsonl"
    h = GearHarness("file-out", {"path": str(path)})
    await h.start()
    for n in range(3):
        await h.send({"n": n}, id=f"m{n}")
    for n in range(3, 6):
        await h.send({"n": n}, id=f"m{n}", flush=False)
    crash(h)
    async with GearHarness("file-out", {"path": str(path)}) as again:
        for n in range(3, 8):
            await again.send({"n": n}, id=f"m{n}")
    assert path.read_text() == "".join(f'{{"n":{n}}}\n' for n in range(8))  # the bytes file-out always wrote


async def test_a_torn_last_line_is_cut_with_the_rest_of_the_unacknowledged_tail(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send({"n": 1}, id="m1")
    with open(path, "ab") as f:
        f.write(b'{"n":2}\n{"n":3}\n{"n":')  # written, never acked, the last write torn by the crash
    async with GearHarness("file-out", {"path": str(path)}) as h:
        for n in (2, 3, 4):
            await h.send({"n": n}, id=f"m{n}")
    assert path.read_text() == '{"n":1}\n{"n":2}\n{"n":3}\n{"n":4}\n'


async def test_recorded_but_unacked_batch_is_skipped_when_it_comes_again(tmp_path: Path) -> None:
    """The crash fell between the record (before the ack) and the ack: the batch is in the file,
    below the offset, and the wire still delivers it again."""
    path = tmp_path / "out.jsonl"
    config = {"path": str(path)}
    h = GearHarness("file-out", config)
    await h.start()
    await h.send({"n": 0}, id="m0")
    await h.send({"n": 1}, id="m1", flush=False)  # one batch: m1, m2, then the flush
    await h.send({"n": 2}, id="m2")
    crash(h)
    record = read_ack_log(ack_log_path(path))
    assert record is not None and set(record.ids) == {"m0", "m1", "m2"}  # this flush and the one before
    async with GearHarness("file-out", config) as again:
        for n in (1, 2, 3):
            await again.send({"n": n}, id=f"m{n}")
        assert (again.gear.written, again.gear.skipped) == (1, 2)  # type: ignore[attr-defined]
    assert path.read_text() == '{"n":0}\n{"n":1}\n{"n":2}\n{"n":3}\n'


async def test_acks_pipelined_behind_the_next_batch_are_covered(tmp_path: Path) -> None:
    """A wire may send a batch's acks (buffered in the client) while it already handles the next
    batches: the crash can come after later flushes and before those acks left. The record names
    the batch being recorded and the input's two before it; older ones are dropped."""
    path = tmp_path / "out.jsonl"
    h = GearHarness("file-out", {"path": str(path)})
    await h.start()
    for batch in (("a1", "a2"), ("b1", "b2"), ("c1", "c2"), ("d1", "d2")):
        for n, mid in enumerate(batch):
            await h.send({"id": mid}, id=mid, flush=n == len(batch) - 1)
    crash(h)
    assert set(read_ack_log(ack_log_path(path)).ids) == {"b1", "b2", "c1", "c2", "d1", "d2"}  # type: ignore[union-attr]


async def test_two_inputs_interleaved_each_message_once(tmp_path: Path) -> None:
    """Input A flushes while input B's message is written but not yet acked: the record covers B's
    line, so it names B's id, and B's redelivery after a crash is skipped rather than doubled."""
    path = tmp_path / "out.jsonl"
    config = {"path": str(path)}
    h = GearHarness("file-out", config)
    await h.start()
    gear = h.gear

    async def input_b() -> None:
        await h.send({"from": "b"}, id="b1", flush=False)

    await h.send({"from": "a"}, id="a1", flush=False)
    await asyncio.create_task(input_b())  # another task: another input
    await gear.flush()  # input A's flush before its ack; B has not flushed
    crash(h)
    assert set(read_ack_log(ack_log_path(path)).ids) == {"a1", "b1"}  # type: ignore[union-attr]
    async with GearHarness("file-out", config) as again:
        await again.send({"from": "b"}, id="b1")
        await again.send({"from": "a"}, id="a1")
        await again.send({"from": "a"}, id="a2")
    assert path.read_text() == '{"from":"a"}\n{"from":"b"}\n{"from":"a"}\n'


async def test_a_file_replaced_while_down_is_not_cut(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}, name="sink") as h:
        await h.send({"n": 1}, id="m1")
    os.replace(path, tmp_path / "out.jsonl.1")  # rotated by an operator
    path.write_text('{"n":"kept"}\n{"n":"also kept"}\n')
    caplog.set_level(logging.INFO, logger="fluxmix.gear.sink")
    async with GearHarness("file-out", {"path": str(path)}, name="sink") as h:
        await h.send({"n": 2}, id="m2")
    assert path.read_text() == '{"n":"kept"}\n{"n":"also kept"}\n{"n":2}\n'
    assert any("names another file" in r.getMessage() for r in caplog.records)


async def test_a_file_shorter_than_recorded_is_not_cut(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        for n in range(5):
            await h.send({"n": n}, id=f"m{n}")
    os.truncate(path, 8)  # emptied by hand (copytruncate) to one line
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send({"n": 9}, id="m9")
    assert path.read_text() == '{"n":0}\n{"n":9}\n'


async def test_a_torn_ack_record_counts_as_not_written(tmp_path: Path) -> None:
    """A crash mid-append of a record: that commit did not happen, the previous one holds."""
    path = tmp_path / "out.jsonl"
    path.write_text('{"n":1}\n{"n":2}\n')
    st = os.stat(path)
    good = AckRecord(8, st.st_dev, st.st_ino, ("m1",)).encode()
    ack_log_path(path).write_bytes(good + good.replace(b'"offset":8', b'"offset":16')[:20])
    assert read_ack_log(ack_log_path(path)) == AckRecord(8, st.st_dev, st.st_ino, ("m1",))
    assert truncate_unacknowledged(path, read_ack_log(ack_log_path(path))) == (8, "")
    assert path.read_text() == '{"n":1}\n'


def test_garbage_in_the_ack_log_is_not_a_record(tmp_path: Path) -> None:
    log = tmp_path / "x.ack"
    log.write_bytes(b'not json\n[1]\n{"offset":-1,"dev":1,"ino":1}\n{"offset":1,"dev":1,"ino":1,"ids":[3]}\n')
    assert read_ack_log(log) is None
    assert read_ack_log(tmp_path / "missing.ack") is None


async def test_without_an_ack_log_nothing_is_cut_and_a_torn_line_is_closed(tmp_path: Path) -> None:
    """A file from before the ack log: what was acked is unknown, so nothing is cut."""
    path = tmp_path / "out.jsonl"
    path.write_text('{"n":1}\n{"n":')
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send({"n": 2}, id="m2")
    assert path.read_text() == '{"n":1}\n{"n":\n{"n":2}\n'
    record = read_ack_log(ack_log_path(path))
    assert record is not None and record.offset == path.stat().st_size


async def test_the_ack_log_is_compacted_and_recovery_still_holds(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(file_out, "ACK_LOG_COMPACT_BYTES", 512)
    path = tmp_path / "out.jsonl"
    config = {"path": str(path), "fsync": True}  # fsync: the rename path syncs the directory too
    h = GearHarness("file-out", config)
    await h.start()
    for n in range(200):
        await h.send({"n": n}, id=f"m{n}")
        assert ack_log_path(path).stat().st_size < 1024
    await h.send({"n": 200}, id="m200", flush=False)
    crash(h)
    assert not list(tmp_path.glob(".*.tmp")), "no temporary file left behind"
    async with GearHarness("file-out", config) as again:
        for n in (199, 200, 201):
            await again.send({"n": n}, id=f"m{n}")
    assert path.read_text() == "".join(f'{{"n":{n}}}\n' for n in range(202))


async def test_stop_records_everything_so_a_restart_cuts_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send({"n": 1}, id="m1", flush=False)
    async with GearHarness("file-out", {"path": str(path)}) as h:
        assert h.gear.cut_bytes == 0  # type: ignore[attr-defined]
    assert path.read_text() == '{"n":1}\n'


async def test_an_unwritable_ack_log_fails_the_start_with_its_name(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    ack_log_path(path).mkdir()  # a directory where the log must go
    h = GearHarness("file-out", {"path": str(path)}, name="sink")
    with pytest.raises(Exception, match=r"out\.jsonl\.ack"):
        await h.start()


async def test_ids_in_doubt_survive_a_second_crash_before_they_come_again(tmp_path: Path) -> None:
    """Their redelivery waits for ack_wait; a second crash may come first. The log's first record
    carries them (written once), later records name only their own batch."""
    path = tmp_path / "out.jsonl"
    config = {"path": str(path)}
    h = GearHarness("file-out", config)
    await h.start()
    await h.send({"n": 1}, id="m1", flush=False)
    await h.send({"n": 2}, id="m2")  # recorded; the crash comes before the ack
    crash(h)
    h = GearHarness("file-out", config)
    await h.start()
    for n in range(3, 6):  # new messages; m1 and m2 have not come back yet
        await h.send({"n": n}, id=f"m{n}")
    appended = ack_log_path(path).read_bytes().split(b"\n")[1:-1]
    assert appended and all(b'"m1"' not in line for line in appended)
    crash(h)
    async with GearHarness("file-out", config) as again:
        for n in (1, 2, 5, 6):  # m1, m2 at last (ack_wait), m5 from the second crash, then m6
            await again.send({"n": n}, id=f"m{n}")
        assert (again.gear.written, again.gear.skipped) == (1, 3)  # type: ignore[attr-defined]
    assert path.read_text() == "".join(f'{{"n":{n}}}\n' for n in range(1, 7))


async def test_a_second_file_out_on_the_same_file_is_refused(tmp_path: Path) -> None:
    """Two writers would each record offsets that cut the other's acknowledged lines."""
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}, name="first"):
        second = GearHarness("file-out", {"path": str(path)}, name="second")
        with pytest.raises(Exception, match="already written by another file-out"):
            await second.start()
    async with GearHarness("file-out", {"path": str(path)}, name="second") as h:  # free again
        await h.send({"n": 1}, id="m1")
    assert path.read_text() == '{"n":1}\n'
