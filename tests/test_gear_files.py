"""`file-out` and `file-in`: JSON lines on disk, flushing, offsets, follow, partial lines."""

from __future__ import annotations

import asyncio
import json
import logging
import os
from pathlib import Path

import pytest

from fluxmix.errors import GearError
from fluxmix.gears.file_in import FileIn
from fluxmix.gears.file_out import FileOut
from fluxmix.gears.testing import GearHarness, config_problems
from tests.support.polling import wait_until

# ---------------------------------------------------------------- file-out


async def test_file_out_appends_one_json_line_per_body_and_creates_dirs(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send({"seq": 1, "name": "Zoë"})
        # flushed before handle returned: visible to another reader right now
        assert path.read_text(encoding="utf-8") == '{"seq":1,"name":"Zoë"}\n'
        await h.send({"seq": 2, "nested": {"a": [1, 2]}})
    lines = path.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == [{"seq": 1, "name": "Zoë"}, {"seq": 2, "nested": {"a": [1, 2]}}]


async def test_file_out_appends_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    for seq in (1, 2):
        async with GearHarness("file-out", {"path": str(path)}) as h:
            await h.send({"seq": seq})
    assert path.read_text() == '{"seq":1}\n{"seq":2}\n'


async def test_file_out_relative_path_is_relative_to_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    async with GearHarness("file-out", {"path": "rel/out.jsonl"}) as h:
        await h.send({"a": 1})
    assert (tmp_path / "rel" / "out.jsonl").read_text() == '{"a":1}\n'


async def test_file_out_closes_a_torn_last_line_on_start(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"seq":1}\n{"seq":')  # a crash mid-write
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send({"seq": 2})
    assert path.read_text().splitlines() == ['{"seq":1}', '{"seq":', '{"seq":2}']


async def test_file_out_encodes_bytes_dates_and_sets(tmp_path: Path) -> None:
    import datetime as dt

    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send({"raw": b"\x00\xffhi", "when": dt.date(2026, 1, 2), "tags": {"b", "a"}})
    assert json.loads(path.read_text()) == {"raw": "AP9oaQ==", "when": "2026-01-02", "tags": ["a", "b"]}


async def test_file_out_refuses_values_that_are_not_json_and_writes_nothing(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        with pytest.raises(TypeError, match="object value cannot be written as JSON"):
            await h.send({"x": object()})
        with pytest.raises(ValueError):
            await h.send({"x": float("nan")})
        await h.send({"ok": 1})
    assert path.read_text() == '{"ok":1}\n'


async def test_file_out_batch_writes_lines_in_order_and_a_bad_one_fails_alone(tmp_path: Path) -> None:
    """A batch's lines go out with one write; a body that cannot be encoded stops the batch at
    its index (the wire retries it alone): those before it are written, nothing after it."""
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        writes: list[bytes] = []
        real_write = h.gear._write
        h.gear._write = lambda data: (writes.append(data), real_write(data))[1]  # type: ignore[method-assign]
        await h.send_batch([{"seq": 1}, {"seq": 2, "name": "Zoë"}, {"seq": 3}])
        assert len(writes) == 1 and path.read_text(encoding="utf-8").splitlines() == [
            '{"seq":1}', '{"seq":2,"name":"Zoë"}', '{"seq":3}']
        with pytest.raises(ValueError):
            await h.send_batch([{"seq": 4}, {"seq": 5}, {"seq": float("nan")}, {"seq": 7}])
        assert h.failed_at == 2
        assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
        await h.send_batch([{"seq": 7}])  # the rest, handed over again
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5, 7]


async def test_file_out_batch_skips_ids_repeated_inside_it_and_already_written(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send_batch([{"seq": 1}, {"seq": 2}], ids=["a", "b"])
        await h.send_batch([{"seq": 3}, {"seq": 1}, {"seq": 4}, {"seq": 3}, {"seq": 5}], ids=["c", "a", "d", "c", "e"])
        assert h.gear.skipped == 2
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3, 4, 5]


async def test_file_out_batch_write_failure_fails_the_first_message_and_leaves_no_torn_line(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path)}) as h:
        await h.send_batch([{"seq": 1}])
        real_write = os.write

        def failing_write(fd: int, data: bytes) -> int:
            real_write(fd, bytes(data)[:5])  # a torn write, then the disk gives up
            raise OSError(28, "No space left on device")

        os_write = os.write
        try:
            os.write = failing_write  # type: ignore[assignment]
            with pytest.raises(GearError, match="No space left on device"):
                await h.send_batch([{"seq": 2}, {"seq": 3}], ids=["b", "c"])
        finally:
            os.write = os_write  # type: ignore[assignment]
        assert h.failed_at == 0
        assert path.read_text() == '{"seq":1}\n'  # truncated back: nothing of the batch
        await h.send_batch([{"seq": 2}, {"seq": 3}], ids=["b", "c"])  # the wire's retry: written once
    assert [json.loads(line)["seq"] for line in path.read_text().splitlines()] == [1, 2, 3]


async def test_file_out_envelope_and_fsync(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path), "envelope": True, "fsync": True}, name="sink") as h:
        await h.send({"a": 1}, id="m-1", headers={"h": "v"})
    record = json.loads(path.read_text())
    assert record["id"] == "m-1" and record["body"] == {"a": 1} and record["headers"] == {"h": "v"}
    assert record["origin"] == "test.out" and isinstance(record["ts"], float)


async def test_file_out_start_fails_clearly_when_the_path_cannot_be_opened(tmp_path: Path) -> None:
    (tmp_path / "adir").mkdir()
    h = GearHarness("file-out", {"path": str(tmp_path / "adir")}, name="sink")
    with pytest.raises(GearError, match=r"gear 'sink': cannot open .*adir.* for appending"):
        await h.start()


@pytest.mark.parametrize(
    ("config", "location"),
    [({}, "config"), ({"path": ""}, "config.path"), ({"path": "x", "fsync": "yes"}, "config.fsync"), ({"path": "x", "mode": "w"}, "config")],
)
def test_file_out_config_problems(config: dict, location: str) -> None:
    assert [p.location for p in config_problems(FileOut, config)] == [location]


# ---------------------------------------------------------------- file-in


def write(path: Path, text: str, mode: str = "a") -> None:
    with open(path, mode, encoding="utf-8") as f:
        f.write(text)


async def test_file_in_emits_each_line_with_offsets_as_positions(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"a":1}\n{"a":2}\n', "w")
    h = GearHarness("file-in", {"path": str(path)}, name="src")
    assert await h.run_source() == [{"a": 1}, {"a": 2}]
    assert [m.id for m in h.ctx.emitted["out"]] == ["test/src/0", "test/src/8"]
    assert h.ctx.checkpoint == 16


async def test_file_in_without_follow_reads_a_last_line_without_newline(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"a":1}\r\n\n   \n{"a":2}', "w")  # CRLF, blank lines, no final newline
    h = GearHarness("file-in", {"path": str(path)})
    assert await h.run_source() == [{"a": 1}, {"a": 2}]
    assert h.ctx.checkpoint == path.stat().st_size


async def test_file_in_resumes_from_its_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, "".join(json.dumps({"n": n}) + "\n" for n in range(5)), "w")
    first = GearHarness("file-in", {"path": str(path)}, stop_after=2)
    assert await first.run_source() == [{"n": 0}, {"n": 1}]
    second = GearHarness("file-in", {"path": str(path)}, checkpoint=first.ctx.checkpoint)
    assert await second.run_source() == [{"n": 2}, {"n": 3}, {"n": 4}]


async def test_file_in_checkpoint_beyond_the_end_rereads_from_start(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"a":1}\n', "w")
    assert await GearHarness("file-in", {"path": str(path)}, checkpoint=10_000).run_source() == [{"a": 1}]


async def test_file_in_read_from_end_without_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"old":1}\n', "w")
    assert await GearHarness("file-in", {"path": str(path), "read_from": "end"}).run_source() == []


async def test_file_in_skips_and_counts_malformed_lines_with_line_numbers(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(b'{"a":1}\nnot json\n[1,2]\n\xff\xfe\n{"a":2}\n')
    h = GearHarness("file-in", {"path": str(path)}, name="src")
    with caplog.at_level(logging.WARNING):
        assert await h.run_source() == [{"a": 1}, {"a": 2}]
    assert h.gear.malformed == 3
    text = caplog.text
    assert "line 2 skipped: not JSON" in text
    assert "line 3 skipped: a JSON list, not an object" in text
    assert "line 4 skipped" in text


async def test_file_in_line_numbers_count_from_the_file_start_after_resuming(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"a":1}\n{"a":2}\nbad\n', "w")
    with caplog.at_level(logging.WARNING):
        await GearHarness("file-in", {"path": str(path)}, checkpoint=8).run_source()
    assert "line 3 skipped" in caplog.text


async def test_file_in_skips_over_long_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"a":1}\n' + json.dumps({"big": "x" * 300_000}) + '\n{"a":2}\n', "w")
    h = GearHarness("file-in", {"path": str(path), "max_line_bytes": 1000})
    assert await h.run_source() == [{"a": 1}, {"a": 2}]
    assert h.gear.malformed == 1
    assert h.ctx.checkpoint == path.stat().st_size


async def test_file_in_missing_file_without_follow_fails_start(tmp_path: Path) -> None:
    h = GearHarness("file-in", {"path": str(tmp_path / "nope.jsonl")}, name="src")
    with pytest.raises(GearError, match="gear 'src': cannot read"):
        await h.start()


async def test_file_in_follow_reads_appends_and_waits_for_partial_lines(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"n":1}\n', "w")
    h = GearHarness("file-in", {"path": str(path), "follow": True, "poll_interval": 0.01})
    await h.start()
    task = asyncio.create_task(h.gear.run())
    try:
        await wait_until(lambda: len(h.ctx.bodies()) == 1)
        write(path, '{"n":2}\n{"n":')  # a writer mid-line
        await wait_until(lambda: len(h.ctx.bodies()) == 2)
        await wait_until(lambda: h.ctx.checkpoint == 16)  # only complete lines count
        await asyncio.sleep(0.05)
        assert len(h.ctx.bodies()) == 2
        write(path, "3}\n")
        await wait_until(lambda: len(h.ctx.bodies()) == 3)
    finally:
        h.ctx.stopping.set()
        await asyncio.wait_for(task, 10)
        await h.stop()
    assert h.ctx.bodies() == [{"n": 1}, {"n": 2}, {"n": 3}]
    assert h.ctx.checkpoint == path.stat().st_size
    assert [m.id for m in h.ctx.emitted["out"]] == ["test/gear/0", "test/gear/8", "test/gear/16"]


async def test_file_in_follow_waits_for_the_file_to_appear(tmp_path: Path) -> None:
    path = tmp_path / "later.jsonl"
    h = GearHarness("file-in", {"path": str(path), "follow": True, "poll_interval": 0.01})
    await h.start()
    task = asyncio.create_task(h.gear.run())
    try:
        await asyncio.sleep(0.05)
        write(path, '{"n":1}\n', "w")
        await wait_until(lambda: h.ctx.bodies() == [{"n": 1}])
    finally:
        h.ctx.stopping.set()
        await asyncio.wait_for(task, 10)
        await h.stop()


async def test_file_in_follow_rereads_a_rotated_or_truncated_file(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"n":1}\n{"n":2}\n', "w")
    h = GearHarness("file-in", {"path": str(path), "follow": True, "poll_interval": 0.01})
    await h.start()
    task = asyncio.create_task(h.gear.run())
    try:
        await wait_until(lambda: len(h.ctx.bodies()) == 2)
        os.rename(path, tmp_path / "in.jsonl.1")  # rotation: a new file under the same name
        write(path, '{"n":3}\n{"n":4}\n', "w")
        await wait_until(lambda: len(h.ctx.bodies()) == 4)
        write(path, '{"t":1}\n', "w")  # truncated in place, shorter than what was read
        await wait_until(lambda: len(h.ctx.bodies()) == 5)
    finally:
        h.ctx.stopping.set()
        await asyncio.wait_for(task, 10)
        await h.stop()
    assert h.ctx.bodies() == [{"n": 1}, {"n": 2}, {"n": 3}, {"n": 4}, {"t": 1}]


async def test_file_in_stopping_mid_file_checkpoints_the_next_unread_line(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, "".join(f'{{"n":{n}}}\n' for n in range(100)), "w")
    h = GearHarness("file-in", {"path": str(path), "follow": True}, stop_after=10)
    bodies = await h.run_source()
    assert [b["n"] for b in bodies] == list(range(10))
    resumed = GearHarness("file-in", {"path": str(path)}, checkpoint=h.ctx.checkpoint)
    assert [b["n"] for b in await resumed.run_source()] == list(range(10, 100))


@pytest.mark.parametrize(
    ("config", "location"),
    [
        ({}, "config"),
        ({"path": "x", "follow": 1}, "config.follow"),
        ({"path": "x", "poll_interval": 0}, "config.poll_interval"),
        ({"path": "x", "read_from": "middle"}, "config.read_from"),
        ({"path": "x", "max_line_bytes": 0}, "config.max_line_bytes"),
    ],
)
def test_file_in_config_problems(config: dict, location: str) -> None:
    assert [p.location for p in config_problems(FileIn, config)] == [location]


def test_file_ports() -> None:
    assert FileIn.is_source() and not FileOut.is_source()
    assert [p.name for p in FileIn.output_ports({})] == ["out"]
    assert [p.name for p in FileOut.input_ports({})] == ["in"]
    assert [p.name for p in FileOut.output_ports({})] == ["error"]


@pytest.mark.parametrize("follow", [False, True])
async def test_file_in_refuses_a_directory_at_start(tmp_path: Path, follow: bool) -> None:
    h = GearHarness("file-in", {"path": str(tmp_path), "follow": follow}, name="src")
    with pytest.raises(GearError, match="it is a directory"):
        await h.start()


async def test_file_in_read_from_end_records_where_it_started(tmp_path: Path) -> None:
    path = tmp_path / "in.jsonl"
    write(path, '{"old":1}\n', "w")
    h = GearHarness("file-in", {"path": str(path), "follow": True, "read_from": "end", "poll_interval": 0.01})
    await h.start()
    task = asyncio.create_task(h.gear.run())
    try:
        await wait_until(lambda: h.ctx.checkpoint == 10)  # saved before any new line: a restart won't reread
        write(path, '{"new":1}\n')
        await wait_until(lambda: h.ctx.bodies() == [{"new": 1}])
    finally:
        h.ctx.stopping.set()
        await asyncio.wait_for(task, 10)
        await h.stop()
    assert h.ctx.checkpoint == 20


# ---------------------------------------------------------------- file-out dedupe


def envelope_ids(path: Path) -> list[str]:
    return [json.loads(line)["id"] for line in path.read_text().splitlines()]


async def test_file_out_dedupe_skips_an_id_it_wrote_recently(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "out.jsonl"
    caplog.set_level(logging.DEBUG, logger="fluxmix.gear.sink")
    async with GearHarness("file-out", {"path": str(path), "envelope": True, "dedupe": 10}, name="sink") as h:
        await h.send({"seq": 1}, id="a")
        await h.send({"seq": 2}, id="b")
        await h.send({"seq": 1, "again": True}, id="a")  # a redelivery: same id
        await h.send({"seq": 3}, id="c")
        gear = h.gear
        assert isinstance(gear, FileOut)
        assert (gear.written, gear.skipped) == (3, 1)
    assert envelope_ids(path) == ["a", "b", "c"]
    assert any("skipped duplicate message a" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    # the summary at stop, at info
    assert any("skipped 1 duplicate messages" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


async def test_file_out_skips_a_repeated_id_by_default(tmp_path: Path) -> None:
    """An id is the message's identity (JetStream de-duplicates by it too): a repeat within a
    run is a redelivery whose ack was lost, so it is not written twice even without dedupe."""
    path = tmp_path / "out.jsonl"
    async with GearHarness("file-out", {"path": str(path), "envelope": True}) as h:
        await h.send({"seq": 1}, id="a")
        await h.send({"seq": 1}, id="a")
        assert (h.gear.written, h.gear.skipped) == (1, 1)  # type: ignore[attr-defined]
    assert envelope_ids(path) == ["a"]


async def test_file_out_dedupe_rebuilds_its_window_from_the_file_after_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    config = {"path": str(path), "envelope": True, "dedupe": 100}
    async with GearHarness("file-out", config) as h:
        for n in range(50):
            await h.send({"seq": n}, id=f"m{n}")
    # a new instance on the same file (the mixer after a crash): no memory but the file's
    async with GearHarness("file-out", config) as h:
        for n in range(40, 60):  # the batch handled but not acked comes again, then new ones
            await h.send({"seq": n}, id=f"m{n}")
        assert (h.gear.written, h.gear.skipped) == (10, 10)  # type: ignore[attr-defined]
    assert envelope_ids(path) == [f"m{n}" for n in range(60)]


async def test_file_out_dedupe_window_is_bounded_by_the_last_n_lines(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    config = {"path": str(path), "envelope": True, "dedupe": 3}
    async with GearHarness("file-out", config) as h:
        for name in "abcd":
            await h.send({}, id=name)
        assert len(h.gear._recent) == 3  # type: ignore[attr-defined]
    assert envelope_ids(path) == ["a", "b", "c", "d"]
    async with GearHarness("file-out", config) as h:  # rebuilt: the last 3 lines are b, c, d
        for name in "cbae":  # c, b inside the window: skipped; a fell out of it: written again
            await h.send({}, id=name)
        assert (h.gear.written, h.gear.skipped) == (2, 2)  # type: ignore[attr-defined]
    assert envelope_ids(path) == ["a", "b", "c", "d", "a", "e"]


async def test_file_out_dedupe_ignores_a_torn_last_line_left_by_a_crash(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    config = {"path": str(path), "envelope": True, "dedupe": 10}
    async with GearHarness("file-out", config) as h:
        await h.send({"seq": 1}, id="a")
    # the crash cut the next write short: never acked, so it is cut and comes again
    write(path, '{"id":"b","origin":"x","ts":1.0,"headers":{},"body":{"se')
    async with GearHarness("file-out", config) as h:
        await h.send({"seq": 2}, id="b")
        await h.send({"seq": 1}, id="a")
    assert envelope_ids(path) == ["a", "b"]


async def test_file_out_dedupe_reads_only_the_tail_of_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from fluxmix.gears import jsonlines as files

    path = tmp_path / "out.jsonl"
    line = b'{"id":"old","origin":"x","ts":1.0,"headers":{},"body":{"pad":"' + b"x" * 900 + b'"}}\n'
    new = b"".join(files.encode_json_line({"id": f"new{n}", "origin": "x", "ts": 1.0, "headers": {}, "body": {}}) for n in range(5))
    path.write_bytes(line * 5000 + new)  # ~4.6 MB of older lines, then 5 new ones
    read_sizes: list[int] = []
    real_open = open

    def counting_open(*args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        handle = real_open(*args, **kwargs)  # type: ignore[call-overload]
        real_read = handle.read

        def read(n: int = -1) -> bytes:
            data = real_read(n)
            read_sizes.append(len(data))
            return data

        handle.read = read
        return handle

    monkeypatch.setattr(files, "open", counting_open, raising=False)
    assert files.tail_ids(path, 5) == [f"new{n}" for n in range(5)]
    assert sum(read_sizes) <= files.READ_CHUNK
    read_sizes.clear()
    assert files.tail_ids(path, 7) == ["old", "old", *(f"new{n}" for n in range(5))]
    assert sum(read_sizes) <= files.READ_CHUNK


@pytest.mark.parametrize("block_size", [1, 7, 64, 65536])
def test_tail_ids_any_block_size_gives_the_last_n_complete_lines(tmp_path: Path, block_size: int) -> None:
    from fluxmix.gears.jsonlines import encode_json_line, tail_ids

    path = tmp_path / "out.jsonl"
    envelopes = b"".join(encode_json_line({"id": f"m{n}", "origin": "x", "ts": 1.0, "headers": {}, "body": {"n": n}}) for n in range(20))
    # a body line (not an envelope) takes a place but gives no id; then a torn last line
    path.write_bytes(b"not json\n" + envelopes + b'{"seq":1}\n' + b'{"id":"torn","bo')
    assert tail_ids(path, 3, block_size=block_size) == ["m18", "m19"]
    assert tail_ids(path, 21, block_size=block_size) == [f"m{n}" for n in range(20)]
    assert tail_ids(path, 1000, block_size=block_size) == [f"m{n}" for n in range(20)]
    assert tail_ids(tmp_path / "missing.jsonl", 5) == []
    assert tail_ids(path, 0) == []


def test_file_out_dedupe_needs_envelope() -> None:
    problems = config_problems(FileOut, {"path": "x", "dedupe": 100})
    assert [(p.location, p.reason) for p in problems] == [
        ("config.dedupe", "dedupe needs envelope: true: the message id must be in the file to survive a crash")
    ]
    assert config_problems(FileOut, {"path": "x", "dedupe": 100, "envelope": True}) == []
    assert config_problems(FileOut, {"path": "x", "dedupe": 0}) == []
    assert [p.location for p in config_problems(FileOut, {"path": "x", "dedupe": -1, "envelope": True})] == ["config.dedupe"]
    assert [p.location for p in config_problems(FileOut, {"path": "x", "dedupe": 1.5, "envelope": True})] == ["config.dedupe"]


async def test_file_out_dedupe_recognises_a_replay_through_the_real_runtime(tmp_path: Path) -> None:
    """Ids are deterministic end to end: a source replaying from scratch through a map gear
    re-emits the very ids the sink wrote, so nothing is written twice."""
    from fluxmix.gears.catalog import Catalog
    from fluxmix.runtime import Runtime
    from fluxmix.scenario import Endpoint, GearSpec, Scenario, WireSpec
    from fluxmix.transports.memory import MemoryBroker

    path = tmp_path / "out.jsonl"

    class NoCheckpoints:  # every run starts the source from seq 1: a full replay
        def load_checkpoint(self, scenario_name: str, gear: str) -> None:
            return None

        def save_checkpoint(self, scenario_name: str, gear: str, value: object) -> None:
            pass

    def wire(src: str, dst: str) -> WireSpec:
        return WireSpec(Endpoint(*src.split(".")), Endpoint(*dst.split(".")), "memory", {})

    scenario = Scenario(
        name="replay",
        gears=(
            GearSpec("source", "generate", {"count": 30}),
            GearSpec("stamp", "map", {"set": {"double": {"expr": "seq * 2"}}}),
            GearSpec("sink", "file-out", {"path": str(path), "envelope": True, "dedupe": 1000}),
        ),
        wires=(wire("source.out", "stamp.in"), wire("stamp.out", "sink.in")),
    )

    async def run_once() -> dict:
        rt = Runtime(scenario, "a" * 64, catalog=Catalog.default(), brokers={"memory": MemoryBroker(queue_size=8)}, checkpoints=NoCheckpoints())
        await rt.build()
        await rt.start()
        async with asyncio.timeout(10):
            while rt.status().to_json()["gears"]["sink"]["handled"] < 30:
                await asyncio.sleep(0.01)
        await rt.stop()
        return rt.status().to_json()["gears"]["sink"]

    first = await run_once()
    ids = envelope_ids(path)
    assert len(ids) == 30 and len(set(ids)) == 30
    second = await run_once()
    assert second["handled"] == 30 and envelope_ids(path) == ids  # all 30 recognised, none written
    assert [json.loads(line)["body"]["seq"] for line in path.read_text().splitlines()] == list(range(1, 31))
    assert first["errors"] == second["errors"] == 0
