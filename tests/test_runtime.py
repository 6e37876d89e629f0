"""The Runtime over real memory wires: ordering, backpressure, fan-out/in, failures, drain."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, ClassVar

import pytest

from tests.support import runtime as h
from fluxmix.errors import ActivationError, GearError, ReadOnlyBodyError
from fluxmix.gears.base import Gear, Port
from fluxmix.gears.generate import Generate
from fluxmix.message import Message, derived_id, source_id
from fluxmix.runtime import Runtime, topological_order
from fluxmix.scenario import Scenario, WireSpec
from fluxmix.transports.memory import MemoryBroker, MemoryWire
from fluxmix.runtime import MemoryCheckpoints
from tests.support.polling import wait_until
from tests.support.runtime import Collect


@pytest.fixture(autouse=True)
def _clean() -> None:
    h.reset()


def make(scen: Scenario, *, catalog: Any = None, checkpoints: Any = None, brokers: Any = None) -> Runtime:
    return Runtime(
        scen,
        "f" * 64,
        catalog=catalog or h.catalog(),
        brokers=brokers or {"memory": MemoryBroker(queue_size=8)},
        checkpoints=checkpoints if checkpoints is not None else MemoryCheckpoints(),
    )


async def run_until(rt: Runtime, predicate: Any) -> None:
    await rt.build()
    await rt.start()
    await wait_until(predicate)


def seqs(gear: str) -> list[int]:
    return [b["seq"] for b in h.SEEN[gear]]


LINE = [("src", "t-counter", {"count": 100}), ("mid", "t-pass", {}), ("sink", "t-collect", {})]
LINE_WIRES: list[Any] = [("src.out", "mid.in"), ("mid.out", "sink.in")]


async def test_line_delivers_everything_in_order_and_counts() -> None:
    rt = make(h.scenario("line", LINE, LINE_WIRES))
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 100)
    report = await rt.stop()
    assert seqs("sink") == list(range(1, 101))
    st = rt.status().to_json()
    assert st["state"] == "stopped"
    assert st["gears"]["src"]["emitted"] == 100 and st["gears"]["src"]["state"] == "stopped"
    assert st["gears"]["mid"]["handled"] == 100 and st["gears"]["sink"]["handled"] == 100
    assert st["gears"]["sink"]["sink"] is True and st["gears"]["mid"]["sink"] is False
    wire = st["wires"]["mid.out->sink.in"]
    assert (wire["sent"], wire["received"], wire["dropped"], wire["in_queue"]) == (100, 100, 0, 0)
    assert wire["transport"] == "memory" and wire["from"] == "mid.out" and wire["to"] == "sink.in"
    assert report.timed_out is False
    assert rt.first_handled_at is not None and rt.last_handled_at >= rt.first_handled_at


async def test_message_ids_and_envelope() -> None:
    rt = make(h.scenario("line", LINE, LINE_WIRES))
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 100)
    await rt.stop()
    first = h.SEEN["sink"][0]
    # the source's id is positional; mid's is derived from it, so a replay re-emits the same id
    assert first["_id"] == derived_id(source_id("line", "src", 1), "mid", "out", 0)
    assert len({b["_id"] for b in h.SEEN["sink"]}) == 100


async def test_start_order_sinks_first_and_stop_order_sources_first() -> None:
    rt = make(h.scenario("line", LINE, LINE_WIRES))
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 100)
    await rt.stop()
    starts = [e[1] for e in h.EVENTS if e[0] == "start"]
    stops = [e[1] for e in h.EVENTS if e[0] == "stop"]
    assert starts == ["sink", "mid", "src"]
    assert h.EVENTS.index(("run", "src")) > h.EVENTS.index(("start", "src"))
    assert stops == ["src", "mid", "sink"]


def test_topological_order_keeps_declaration_order_for_ties() -> None:
    scen = h.scenario(
        "t",
        [("sink", "t-collect", {}), ("b", "t-counter", {}), ("a", "t-counter", {})],
        [("a.out", "sink.in"), ("b.out", "sink.other")],
    )
    assert topological_order(scen) == ["b", "a", "sink"]
    cyclic = h.scenario("c", [("x", "t-pass", {}), ("y", "t-pass", {})], [("x.out", "y.in"), ("y.out", "x.in")])
    with pytest.raises(ActivationError, match="cycle"):
        topological_order(cyclic)


class Sampling(Collect):
    """A slow sink that samples how far the producer got ahead of it at every message."""

    type = "t-sampling"
    probe: Any = None
    samples: list[tuple[int, int]] = []

    async def handle(self, port: str, message: Message) -> None:
        await asyncio.sleep(0.0005)
        await super().handle(port, message)
        Sampling.samples.append(Sampling.probe())


async def test_slow_sink_bounds_the_queue_and_holds_the_source_back() -> None:
    cat = h.catalog()
    cat.register("t-sampling", Sampling)
    scen = h.scenario("bp", [("src", "t-counter", {}), ("sink", "t-sampling", {})],
                      [("src.out", "sink.in", {"queue_size": 4})])
    rt = make(scen, catalog=cat)
    Sampling.samples = []

    def probe() -> tuple[int, int]:
        st = rt.status().to_json()
        return st["wires"]["src.out->sink.in"]["in_queue"], st["gears"]["src"]["emitted"] - st["gears"]["sink"]["handled"]

    Sampling.probe = probe
    await run_until(rt, lambda: len(h.SEEN["sink"]) >= 200)
    report = await rt.stop()
    depths = [d for d, _ in Sampling.samples]
    ahead = [a for _, a in Sampling.samples]
    assert max(depths) <= 4
    assert max(ahead) <= 4 + 1  # queue + the one being handled; the producer waits for the rest
    st = rt.status().to_json()
    emitted = st["gears"]["src"]["emitted"]
    assert seqs("sink") == list(range(1, emitted + 1))  # drained: nothing lost, nothing twice
    assert st["wires"]["src.out->sink.in"]["dropped"] == 0
    assert not report.timed_out


async def test_fan_out_shares_one_read_only_body_and_a_mutating_gear_gets_a_clear_error() -> None:
    """The mutation guard: a plugin gear that changes its input cannot affect its sibling on the
    same fan-out; its attempt fails that message alone with a ReadOnlyBodyError (dead-lettered)."""
    tried: list[str] = []

    class Mutating(Collect):
        type = "t-mutating"

        async def handle(self, port: str, message: Message) -> None:
            for attempt in (lambda b: b.__setitem__("seq", -1), lambda b: b["tags"].append("x"),
                            lambda b: b["meta"].update(k="changed"), lambda b: b.pop("seq")):
                try:
                    attempt(message.body)
                except ReadOnlyBodyError as exc:
                    tried.append(str(exc))
            message.body["seq"] = -1  # and once more, uncaught: this message fails

    cat = h.catalog()
    cat.register("t-mutating", Mutating)
    cat.register("generate", Generate)
    scen = h.scenario(
        "fanout",
        [("src", "generate", {"count": 30, "body": {"tags": ["a"], "meta": {"k": "v"}}}),
         ("a", "t-collect", {}), ("b", "t-mutating", {}),
         ("errors", "t-collect", {})],
        [("src.out", "a.in"), ("src.out", "b.in", {"max_deliver": 1}), ("b.error", "errors.in")],
    )
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["a"]) == 30 and len(h.SEEN["errors"]) == 30)
    await rt.stop()
    assert seqs("a") == list(range(1, 31))
    assert all(b["tags"] == ["a"] and b["meta"] == {"k": "v"} for b in h.SEEN["a"])
    assert len(tried) == 4 * 30 and all("read-only" in t for t in tried)
    assert all("ReadOnlyBodyError: message bodies are read-only" in b["_headers"]["error"] for b in h.SEEN["errors"])
    assert rt.status().to_json()["gears"]["src"]["emitted"] == 30  # one emit, two wires
    assert rt.status().to_json()["gears"]["b"]["dead_lettered"] == 30


async def test_fan_in_from_several_wires_into_one_gear() -> None:
    scen = h.scenario(
        "fanin",
        [("s1", "t-counter", {"count": 40}), ("s2", "t-counter", {"count": 40}),
         ("s3", "t-counter", {"count": 10}), ("sink", "t-collect", {})],
        [("s1.out", "sink.in"), ("s2.out", "sink.in"), ("s3.out", "sink.other")],
    )
    rt = make(scen)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 90)
    await rt.stop()
    by_id = {b["_id"] for b in h.SEEN["sink"]}
    assert len(by_id) == 90
    assert sorted(b["seq"] for b in h.SEEN["sink"] if b["_port"] == "other") == list(range(1, 11))
    assert rt.gear("sink").max_active == 1  # fan-in still hands the gear one message at a time


async def test_retries_then_dead_letter_to_the_error_port() -> None:
    scen = h.scenario(
        "dl",
        [("src", "t-counter", {"count": 5}), ("mid", "t-pass", {"fail_seq": 3}),
         ("sink", "t-collect", {}), ("errors", "t-collect", {})],
        [("src.out", "mid.in", {"max_deliver": 3, "retry_delay": 0}), ("mid.out", "sink.in"),
         ("mid.error", "errors.in")],
    )
    rt = make(scen)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 4 and len(h.SEEN["errors"]) == 1)
    await rt.stop()
    assert seqs("sink") == [1, 2, 4, 5]
    err = h.SEEN["errors"][0]
    assert err["seq"] == 3
    assert err["_headers"]["error-gear"] == "mid" and err["_headers"]["error-port"] == "in"
    assert err["_headers"]["error"] == "ValueError: cannot pass seq 3"
    st = rt.status().to_json()
    mid = st["gears"]["mid"]
    assert (mid["errors"], mid["dead_lettered"], mid["dropped"], mid["handled"]) == (3, 1, 0, 4)
    wire = st["wires"]["src.out->mid.in"]
    assert (wire["failed"], wire["redelivered"], wire["dead_lettered"], wire["dropped"]) == (3, 2, 1, 0)
    assert "cannot pass seq 3" in mid["last_error"]


async def test_dead_letter_without_error_wire_is_a_counted_logged_drop(caplog: pytest.LogCaptureFixture) -> None:
    scen = h.scenario(
        "drop",
        [("src", "t-counter", {"count": 5}), ("mid", "t-pass", {"fail_seq": [2, 4]}), ("sink", "t-collect", {})],
        [("src.out", "mid.in", {"max_deliver": 2, "retry_delay": 0}), ("mid.out", "sink.in")],
    )
    rt = make(scen)
    with caplog.at_level(logging.WARNING):
        await run_until(rt, lambda: rt.status().to_json()["wires"]["src.out->mid.in"]["received"] == 5)
        await rt.stop()
    assert seqs("sink") == [1, 3, 5]
    st = rt.status().to_json()
    assert st["gears"]["mid"]["dropped"] == 2 and st["wires"]["src.out->mid.in"]["dropped"] == 2
    drops = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert drops and all("mid" in r.getMessage() for r in drops)
    failures = [r for r in caplog.records if "failed on message" in r.getMessage()]
    assert failures and getattr(failures[0], "gear") == "mid"


async def test_stop_drains_everything_in_flight() -> None:
    checkpoints = MemoryCheckpoints()
    scen = h.scenario(
        "drain",
        [("src", "t-counter", {}), ("mid", "t-pass", {}), ("sink", "t-collect", {"delay": 0.0005})],
        [("src.out", "mid.in", {"queue_size": 16}), ("mid.out", "sink.in", {"queue_size": 16})],
    )
    rt = make(scen, checkpoints=checkpoints)
    await run_until(rt, lambda: len(h.SEEN["sink"]) >= 50)
    report = await rt.stop()
    emitted = rt.status().to_json()["gears"]["src"]["emitted"]
    assert seqs("sink") == list(range(1, emitted + 1))  # every generated message reached the sink
    assert report.drained > 0 and not report.timed_out
    assert checkpoints.values[("drain", "src")] == emitted + 1  # the next seq to produce
    for wire in rt.status().to_json()["wires"].values():
        assert wire["dropped"] == 0 and wire["in_queue"] == 0 and wire["sent"] == wire["received"]


async def test_restart_continues_from_the_checkpoint() -> None:
    checkpoints = MemoryCheckpoints()
    scen = h.scenario("again", [("src", "t-counter", {"count": 60}), ("sink", "t-collect", {"delay": 0.001})],
                      [("src.out", "sink.in", {"queue_size": 4})])
    rt = make(scen, checkpoints=checkpoints)
    await run_until(rt, lambda: len(h.SEEN["sink"]) >= 10)
    await rt.stop()
    first = seqs("sink")
    rt2 = make(scen, checkpoints=checkpoints)
    await run_until(rt2, lambda: len(h.SEEN["sink"]) == 60)
    await rt2.stop()
    assert seqs("sink") == list(range(1, 61))  # continued where it left off, nothing twice
    assert len(first) < 60


class FlushLog:
    events: list[str] = []


class RecordingFlushWire(MemoryWire):
    """A real memory wire whose flush takes a moment and is recorded."""

    async def flush(self) -> None:
        FlushLog.events.append("flush-start")
        await asyncio.sleep(0.001)
        FlushLog.events.append("flush-end")


class RecordingBroker(MemoryBroker):
    def wire(self, scenario: Scenario, scenario_hash: str, spec: WireSpec) -> MemoryWire:
        return RecordingFlushWire(spec, queue_size=self.queue_size)


class RecordingCheckpoints(MemoryCheckpoints):
    def save_checkpoint(self, scenario_name: str, gear: str, value: Any) -> None:
        FlushLog.events.append("save")
        super().save_checkpoint(scenario_name, gear, value)


async def test_checkpoint_is_saved_only_after_the_outputs_are_flushed() -> None:
    FlushLog.events = []
    scen = h.scenario("ck", [("src", "t-counter", {"count": 30, "checkpoint_every": 7}), ("sink", "t-collect", {})],
                      [("src.out", "sink.in")])
    rt = make(scen, checkpoints=RecordingCheckpoints(), brokers={"memory": RecordingBroker()})
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 30)
    await rt.stop()
    saves = [i for i, e in enumerate(FlushLog.events) if e == "save"]
    assert len(saves) >= 4
    for i in saves:
        assert FlushLog.events[i - 1] == "flush-end"


async def test_gear_failing_in_start_raises_gear_error_and_stop_cleans_up() -> None:
    scen = h.scenario("bad", [("src", "t-counter", {"count": 5}), ("mid", "t-pass", {}),
                              ("sink", "t-collect", {"fail_start": True})], LINE_WIRES)
    rt = make(scen)
    await rt.build()
    with pytest.raises(GearError, match="gear 'sink': start failed: RuntimeError: cannot open the thing") as err:
        await rt.start()
    assert err.value.gear == "sink"
    assert rt.state == "failed"
    report = await rt.stop()
    assert report == type(report)(0, False)
    assert ("run", "src") not in h.EVENTS and ("start", "mid") not in h.EVENTS
    st = rt.status().to_json()
    assert st["gears"]["sink"]["state"] == "failed" and st["state"] == "stopped"
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_source_failing_in_start_stops_the_started_sinks() -> None:
    scen = h.scenario("bad2", [("src", "t-counter", {"fail_start": True}), ("sink", "t-collect", {})],
                      [("src.out", "sink.in")])
    rt = make(scen)
    await rt.build()
    with pytest.raises(GearError, match="'src'"):
        await rt.start()
    await rt.stop()
    assert ("stop", "sink") in h.EVENTS and ("stop", "src") not in h.EVENTS
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_build_failures_name_the_gear() -> None:
    rt = make(h.scenario("b", [("x", "nope", {})], []))
    with pytest.raises(GearError, match="gear 'x': unknown gear type 'nope'"):
        await rt.build()
    await rt.stop()
    rt = make(h.scenario("b", [("src", "t-counter", {}), ("y", "t-broken", {})], [("src.out", "y.in")]))
    with pytest.raises(GearError, match="gear 'y': cannot be built: ValueError: bad config for broken"):
        await rt.build()
    await rt.stop()
    rt = make(h.scenario("b", [("src", "t-counter", {}), ("y", "t-collect", {})],
                         [("src.out", "y.in", {"transport": "standard"})]))
    with pytest.raises(ActivationError, match="no broker for transport 'standard'"):
        await rt.build()


async def test_a_crashing_source_is_restarted_and_continues() -> None:
    scen = h.scenario("crash", [("src", "t-counter", {"count": 20, "fail_after": 5}), ("sink", "t-collect", {})],
                      [("src.out", "sink.in")])
    rt = make(scen)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 20)
    st = rt.status().to_json()["gears"]["src"]
    assert st["restarts"] == 1 and st["errors"] == 1 and "source crashed" in st["last_error"]
    await wait_until(lambda: rt.status().to_json()["gears"]["src"]["state"] == "finished")
    await rt.stop()
    assert seqs("sink") == list(range(1, 21))


async def test_stop_timeout_abandons_and_counts_what_was_left() -> None:
    h.GATES["sink"] = asyncio.Event()  # never opened: the sink hangs on its first message
    scen = h.scenario("hang", [("src", "t-counter", {"count": 5}), ("sink", "t-collect", {})],
                      [("src.out", "sink.in")])
    rt = make(scen)
    await run_until(rt, lambda: rt.status().to_json()["wires"]["src.out->sink.in"]["sent"] == 5)
    report = await rt.stop(timeout=0.2)
    assert report.timed_out
    wire = rt.status().to_json()["wires"]["src.out->sink.in"]
    assert wire["dropped"] == 5  # never silently
    assert rt.state == "stopped"
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []


async def test_emit_on_unwired_port_is_a_no_op() -> None:
    scen = h.scenario("lonely", [("src", "t-counter", {"count": 3})], [])
    rt = make(scen)
    await rt.build()
    await rt.start()
    await wait_until(lambda: rt.status().to_json()["gears"]["src"]["state"] == "finished")
    await rt.stop()
    assert rt.status().to_json()["gears"]["src"]["emitted"] == 0
    assert rt.first_handled_at is None


async def test_start_and_stop_refuse_the_wrong_state_and_stop_is_idempotent() -> None:
    rt = make(h.scenario("line", LINE, LINE_WIRES))
    with pytest.raises(ActivationError):
        await rt.start()
    await rt.build()
    with pytest.raises(ActivationError):
        await rt.build()
    await rt.start()
    await rt.stop()
    assert await rt.stop() == type(await rt.stop())(0, False)


async def test_a_gear_failing_in_stop_is_counted_and_the_rest_still_stops(caplog: pytest.LogCaptureFixture) -> None:
    class BadStop(Collect):
        type = "t-badstop"

        async def stop(self) -> None:
            raise OSError("disk gone")

    cat = h.catalog()
    cat.register("t-badstop", BadStop)
    scen = h.scenario("bs", [("src", "t-counter", {"count": 10}), ("mid", "t-pass", {}), ("sink", "t-badstop", {})],
                      LINE_WIRES)
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 10)
    with caplog.at_level(logging.ERROR):
        report = await rt.stop()
    assert not report.timed_out and rt.state == "stopped"
    sink = rt.status().to_json()["gears"]["sink"]
    assert sink["errors"] == 1 and "disk gone" in sink["last_error"] and sink["state"] == "stopped"
    assert ("stop", "mid") in h.EVENTS
    assert any("gear sink: stop failed" in r.getMessage() for r in caplog.records)


class FlakyConsumeWire(MemoryWire):
    """A real memory wire whose consumer crashes once, as a transport fault would."""

    crashed = 0

    async def consume(self, delivery: Any) -> None:
        if FlakyConsumeWire.crashed == 0:
            FlakyConsumeWire.crashed += 1
            raise ConnectionError("transport hiccup")
        await super().consume(delivery)


class FlakyBroker(MemoryBroker):
    def wire(self, scenario: Scenario, scenario_hash: str, spec: WireSpec) -> MemoryWire:
        return FlakyConsumeWire(spec, queue_size=self.queue_size)


async def test_a_crashed_wire_consumer_is_restarted() -> None:
    FlakyConsumeWire.crashed = 0
    scen = h.scenario("flaky", [("src", "t-counter", {"count": 20}), ("sink", "t-collect", {})], [("src.out", "sink.in")])
    rt = make(scen, brokers={"memory": FlakyBroker()})
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 20)
    await rt.stop()
    assert FlakyConsumeWire.crashed == 1 and seqs("sink") == list(range(1, 21))


@pytest.mark.parametrize("seed", range(20))
def test_topological_order_of_random_dags(seed: int) -> None:
    import random

    rnd = random.Random(seed)
    n = rnd.randint(2, 12)
    names = [f"g{i}" for i in range(n)]
    edges = {(a, b) for a in range(n) for b in range(a + 1, n) if rnd.random() < 0.3}
    shuffled = names[:]
    rnd.shuffle(shuffled)  # declaration order unrelated to the data flow
    scen = h.scenario("r", [(name, "t-pass", {}) for name in shuffled],
                      [(f"g{a}.out", f"g{b}.in") for a, b in sorted(edges)])
    order = topological_order(scen)
    assert sorted(order) == sorted(names)
    pos = {name: i for i, name in enumerate(order)}
    assert all(pos[f"g{a}"] < pos[f"g{b}"] for a, b in edges)


class Ticker(Gear):
    """Single input; also emits from a background task of its own while a message is in hand."""

    type = "t-ticker"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def handle(self, port: str, message: Message) -> None:
        tick = asyncio.ensure_future(self.ctx.emit("out", {"tick": message.body["seq"]}))
        await tick  # the background emit runs while this message is in hand
        await self.ctx.emit("out", {"echo": message.body["seq"]})


async def test_an_emit_from_another_task_does_not_borrow_the_message_id() -> None:
    """Only the handling task's emits derive their id from the message in hand; an id borrowed by
    a background emit could later be given to a different message and be de-duplicated away."""
    cat = h.catalog()
    cat.register("t-ticker", Ticker)
    scen = h.scenario("ticks", [("src", "t-counter", {"count": 3}), ("tick", "t-ticker", {}),
                                ("sink", "t-collect", {})], [("src.out", "tick.in"), ("tick.out", "sink.in")])
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 6)
    await rt.stop()
    for body in h.SEEN["sink"]:
        parent = source_id("ticks", "src", body.get("echo", body.get("tick")))
        if "echo" in body:
            assert body["_id"] == derived_id(parent, "tick", "out", 0)
        else:
            assert body["_id"] != derived_id(parent, "tick", "out", 0)
            assert len(body["_id"]) == 32  # a random id: never one a replay could hand to another message


class TwoInputTicker(Ticker):
    """Ticker with two inputs, so handle() runs under the gear's lock rather than the fast path."""

    type = "t-ticker2"
    inputs = (Port("in", required=True), Port("in2"))

    async def handle(self, port: str, message: Message) -> None:
        tick = asyncio.ensure_future(self.ctx.emit("out", {"tick": message.body["seq"], "port": port}))
        await tick
        await self.ctx.emit("out", {"echo": message.body["seq"], "port": port})


async def test_an_emit_from_another_task_does_not_borrow_the_message_id_with_several_inputs() -> None:
    """The same rule holds for a gear with several inputs: a task started while a message is in
    hand inherits the handler's context, yet must not derive its ids from that message."""
    cat = h.catalog()
    cat.register("t-ticker2", TwoInputTicker)
    scen = h.scenario(
        "ticks2",
        [("a", "t-counter", {"count": 3}), ("b", "t-counter", {"count": 3}), ("tick", "t-ticker2", {}),
         ("sink", "t-collect", {})],
        [("a.out", "tick.in"), ("b.out", "tick.in2"), ("tick.out", "sink.in")],
    )
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 12)
    await rt.stop()
    for body in h.SEEN["sink"]:
        source = "a" if body["port"] == "in" else "b"
        parent = source_id("ticks2", source, body.get("echo", body.get("tick")))
        if "echo" in body:
            assert body["_id"] == derived_id(parent, "tick", "out", 0)
        else:
            assert body["_id"] != derived_id(parent, "tick", "out", 0)
            assert len(body["_id"]) == 32


class BatchPass(Gear):
    """in -> out with handle_batch only; fails seq `fail_seq` on every attempt; counts attempts
    and batch sizes."""

    type = "t-batch-pass"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}
    attempts: ClassVar[dict[int, int]] = {}
    batches: ClassVar[list[list[int]]] = []

    async def handle_batch(self, port: str, messages: Any) -> None:
        BatchPass.batches.append([m.body["seq"] for m in messages])
        await asyncio.sleep(0.001)  # slower than the source: the queue fills, batches form
        for message in messages:
            seq = message.body["seq"]
            BatchPass.attempts[seq] = BatchPass.attempts.get(seq, 0) + 1
            if seq == self.config["fail_seq"]:
                raise ValueError(f"cannot pass seq {seq}")
            await self.ctx.emit("out", {**message.body, "passed": True})


async def test_a_failing_message_in_a_batch_is_retried_and_dead_lettered_alone() -> None:
    BatchPass.attempts, BatchPass.batches = {}, []
    cat = h.catalog()
    cat.register("t-batch-pass", BatchPass)
    scen = h.scenario(
        "batchdl",
        [("src", "t-counter", {"count": 200}), ("mid", "t-batch-pass", {"fail_seq": 7}),
         ("sink", "t-collect", {}), ("errors", "t-collect", {})],
        [("src.out", "mid.in", {"max_deliver": 3, "retry_delay": 0}), ("mid.out", "sink.in"),
         ("mid.error", "errors.in")],
    )
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 199 and len(h.SEEN["errors"]) == 1)
    await rt.stop()
    assert seqs("sink") == [n for n in range(1, 201) if n != 7]
    assert all(b["passed"] for b in h.SEEN["sink"])
    assert h.SEEN["errors"][0]["seq"] == 7 and "cannot pass seq 7" in h.SEEN["errors"][0]["_headers"]["error"]
    assert BatchPass.attempts[7] == 3
    assert any(7 in b and len(b) > 1 and b[-1] > 7 for b in BatchPass.batches)  # it failed mid-batch
    assert all(BatchPass.attempts[n] == 1 for n in range(1, 201) if n != 7)
    # ids derive from the message each emit belongs to, batch or not
    ids = [b["_id"] for b in h.SEEN["sink"]]
    assert ids[0] == derived_id(source_id("batchdl", "src", 1), "mid", "out", 0)
    mid = rt.status().to_json()["gears"]["mid"]
    assert (mid["handled"], mid["errors"], mid["dead_lettered"]) == (199, 3, 1)


class Splitter(Gear):
    """in -> out: emits one body, then `parts` more through emit_many, per input message."""

    type = "t-splitter"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def handle_batch(self, port: str, messages: Any) -> None:
        for message in messages:
            seq = message.body["seq"]
            await self.ctx.emit("out", {"seq": seq, "part": 0})
            parts = [{"seq": seq, "part": k} for k in range(1, self.config["parts"] + 1)]
            assert await self.ctx.emit_many("out", parts) == len(parts)


async def test_emit_many_keeps_order_and_derives_ids_like_successive_emits() -> None:
    cat = h.catalog()
    cat.register("t-splitter", Splitter)
    cat.register("generate", Generate)
    scen = h.scenario("split", [("src", "generate", {"count": 300}), ("mid", "t-splitter", {"parts": 2}),
                                ("sink", "t-collect", {})],
                      [("src.out", "mid.in"), ("mid.out", "sink.in")])
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 900)
    await rt.stop()
    got = [(b["seq"], b["part"]) for b in h.SEEN["sink"]]
    assert got == [(s, k) for s in range(1, 301) for k in range(3)]  # per-wire order, batch or not
    for body in h.SEEN["sink"][:9] + h.SEEN["sink"][-3:]:
        parent = source_id("split", "src", body["seq"])  # generate's emit_many: ids from positions
        assert body["_id"] == derived_id(parent, "mid", "out", body["part"])
    st = rt.status().to_json()
    assert st["gears"]["src"]["emitted"] == 300 and st["gears"]["mid"]["emitted"] == 900


async def test_a_batching_source_is_held_back_by_a_slow_sink_and_drained_on_stop() -> None:
    """generate hands the wire 256 messages at once: the bound still holds per message, and a
    stop drains what it emitted, its checkpoint naming the next one."""
    cat = h.catalog()
    cat.register("t-sampling", Sampling)
    cat.register("generate", Generate)
    checkpoints = MemoryCheckpoints()
    scen = h.scenario("bpmany", [("src", "generate", {}), ("sink", "t-sampling", {})],
                      [("src.out", "sink.in", {"queue_size": 4})])
    rt = make(scen, catalog=cat, checkpoints=checkpoints)
    Sampling.samples = []
    Sampling.probe = lambda: (rt.status().to_json()["wires"]["src.out->sink.in"]["in_queue"], 0)
    await run_until(rt, lambda: len(h.SEEN["sink"]) >= 100)
    report = await rt.stop()
    assert max(d for d, _ in Sampling.samples) <= 4
    emitted = rt.status().to_json()["gears"]["src"]["emitted"]
    assert seqs("sink") == list(range(1, emitted + 1))
    assert checkpoints.load_checkpoint("bpmany", "src") == emitted + 1
    assert not report.timed_out


class EmitThenEach(Gear):
    """Per message: emit() while in hand, then emit_each() for the whole batch after the loop."""

    type = "t-emit-each"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def handle_batch(self, port: str, messages: Any) -> None:
        await asyncio.sleep(0.001)  # slower than the source: batches form
        for message in messages:
            await self.ctx.emit("out", {"seq": message.body["seq"], "k": 0})
        await self.ctx.emit_each("out", [(m, {"seq": m.body["seq"], "k": 1}) for m in messages])


async def test_emit_each_ids_continue_each_messages_count_and_order_holds() -> None:
    cat = h.catalog()
    cat.register("t-emit-each", EmitThenEach)
    scen = h.scenario("each", [("src", "t-counter", {"count": 200}), ("mid", "t-emit-each", {}),
                               ("sink", "t-collect", {})],
                      [("src.out", "mid.in"), ("mid.out", "sink.in")])
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 400)
    await rt.stop()
    got = h.SEEN["sink"]
    assert sorted((b["seq"], b["k"]) for b in got) == [(s, k) for s in range(1, 201) for k in (0, 1)]
    for k in (0, 1):  # per kind, in the wire's order
        assert [b["seq"] for b in got if b["k"] == k] == list(range(1, 201))
    for body in got:
        assert body["_id"] == derived_id(source_id("each", "src", body["seq"]), "mid", "out", body["k"])


class EachThenMore(Gear):
    """emit_each first (every output its message's first on the port: the lazily counted fast
    path), on a subset too, then emit() and emit_each again: the counts the fast path skipped
    writing must still number every later emit of each message."""

    type = "t-each-then-more"
    inputs = (Port("in", required=True),)
    outputs = (Port("out"), Port("side"))
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def handle_batch(self, port: str, messages: Any) -> None:
        await asyncio.sleep(0.001)  # slower than the source: batches form
        count: dict[int, int] = {}
        mine: dict[int, int] = {}  # "side": its own count

        def body(m: Message, k: int, on: str = "out") -> dict[str, Any]:
            seq = m.body["seq"]
            table = count if on == "out" else mine
            table[seq] = table.get(seq, 0) + 1
            return {"seq": seq, "k": k, "i": table[seq] - 1, "on": on}

        seen = [m for m in messages]  # iterate once: all in hand up to the last
        odd = [m for m in seen if m.body["seq"] % 2]
        await self.ctx.emit_each("side", [(m, body(m, 0, "side")) for m in odd])  # a subset, in order
        await self.ctx.emit_each("out", [(m, body(m, 0)) for m in seen])  # the batch's prefix
        await self.ctx.emit("out", body(seen[-1], 1))  # the message in hand, once more
        for m in messages:  # iterate again: every message emits once more
            await self.ctx.emit("out", body(m, 2))
        await self.ctx.emit_each("out", [(m, body(m, 3)) for m in odd])
        await self.ctx.emit_each("side", [(m, body(m, 3, "side")) for m in odd])


async def test_emit_each_first_emits_counted_lazily_still_number_later_emits() -> None:
    cat = h.catalog()
    cat.register("t-each-then-more", EachThenMore)
    scen = h.scenario("lazy", [("src", "t-counter", {"count": 300}), ("mid", "t-each-then-more", {}),
                               ("sink", "t-collect", {}), ("side", "t-collect", {})],
                      [("src.out", "mid.in"), ("mid.out", "sink.in"), ("mid.side", "side.in")])
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) >= 300 * 2 + 150 and len(h.SEEN["side"]) == 300)
    await rt.stop()
    for sink, port in (("sink", "out"), ("side", "side")):
        got = h.SEEN[sink]
        for b in got:
            assert b["_id"] == derived_id(source_id("lazy", "src", b["seq"]), "mid", port, b["i"]), b
        assert len({b["_id"] for b in got}) == len(got)  # no id given twice
    assert [b["seq"] for b in h.SEEN["sink"] if b["k"] == 0] == list(range(1, 301))


async def test_map_and_filter_batches_dead_letter_a_failing_message_alone() -> None:
    """map's and filter's batch paths emit what they computed at once; a message whose
    expression fails is retried and dead-lettered alone, its neighbours pass once, in order."""
    cat = h.catalog()
    from fluxmix.gears.transform import Filter, Map

    cat.register("map", Map)
    cat.register("filter", Filter)
    scen = h.scenario(
        "mfdl",
        [("src", "t-counter", {"count": 300}), ("slow", "t-collect", {}),
         ("ratio", "map", {"set": {"r": {"expr": "100 / (seq - 77)"}}}),
         ("odd", "filter", {"where": "seq % 2 == 1"}),
         ("sink", "t-collect", {}), ("errors", "t-collect", {})],
        [("src.out", "ratio.in", {"max_deliver": 2, "retry_delay": 0}), ("ratio.out", "odd.in"),
         ("odd.out", "sink.in"), ("ratio.error", "errors.in")],
    )
    rt = make(scen, catalog=cat)
    expected = [n for n in range(1, 301) if n != 77 and n % 2 == 1]
    # seq 300 is even: the sink never sees it. Stopping as soon as the sink and errors are
    # complete could stop the source before its last emit (it saves a checkpoint first, in a
    # thread: slow under load), and ratio would rightly have handled 298. Wait for the source
    # to finish too; stop() then drains all 300 through ratio.
    await run_until(rt, lambda: len(h.SEEN["sink"]) == len(expected) and len(h.SEEN["errors"]) == 1
                    and rt.status().to_json()["gears"]["src"]["state"] == "finished")
    await rt.stop()
    assert seqs("sink") == expected
    assert h.SEEN["errors"][0]["seq"] == 77
    ratio = rt.status().to_json()["gears"]["ratio"]
    assert (ratio["handled"], ratio["errors"], ratio["dead_lettered"]) == (299, 2, 1)
    first = h.SEEN["sink"][0]
    assert first["_id"] == derived_id(derived_id(source_id("mfdl", "src", 1), "ratio", "out", 0), "odd", "out", 0)


class _AllAtOnce(Gear):
    """Source: emits {"seq": 1..count} in one emit_many, so the wire's queue_size decides how
    the downstream gear's batches split."""

    type = "t-all-at-once"
    outputs = (Port("out"),)
    config_schema: ClassVar[dict[str, Any]] = {"type": "object"}

    async def run(self) -> None:
        count = self.config["count"]
        await self.ctx.emit_many("out", [{"seq": n} for n in range(1, count + 1)], positions=range(1, count + 1))


@pytest.mark.parametrize(("queue_size", "at"), [(2, 0), (3, 1), (7, 6), (300, 76)])
async def test_map_counts_every_message_whatever_the_failing_message_position_in_its_batch(
        queue_size: int, at: int) -> None:
    """The failing message first, mid-way, last in its batch, or in the one big batch: the
    neighbours count as handled once each, the failing one is dead-lettered and not handled."""
    from fluxmix.gears.transform import Map

    cat = h.catalog()
    cat.register("map", Map)
    cat.register("t-all-at-once", _AllAtOnce)
    positions: list[tuple[int, int]] = []
    scen = h.scenario(
        "mpos",
        [("src", "t-all-at-once", {"count": 300}), ("ratio", "map", {"set": {"r": {"expr": "100 / (seq - 77)"}}}),
         ("sink", "t-collect", {}), ("errors", "t-collect", {})],
        [("src.out", "ratio.in", {"max_deliver": 2, "retry_delay": 0}), ("ratio.out", "sink.in"),
         ("ratio.error", "errors.in")],
    )
    rt = make(scen, catalog=cat, brokers={"memory": MemoryBroker(queue_size=queue_size)})
    await rt.build()
    runner = rt.runners["ratio"]
    handle_batch = runner._handle_batch

    async def spy(port: str, messages: Any, cursor: Any) -> Any:
        seqs_in = [m.body["seq"] for m in messages]
        if 77 in seqs_in:
            positions.append((seqs_in.index(77), len(seqs_in)))
        return await handle_batch(port, messages, cursor)

    runner._handle_batch = spy  # type: ignore[method-assign]
    await rt.start()
    await wait_until(lambda: len(h.SEEN["sink"]) == 299 and len(h.SEEN["errors"]) == 1
                     and rt.status().to_json()["gears"]["src"]["state"] == "finished")
    await rt.stop()
    assert positions and positions[0][0] == at
    assert seqs("sink") == [n for n in range(1, 301) if n != 77]
    ratio = rt.status().to_json()["gears"]["ratio"]
    assert (ratio["handled"], ratio["errors"], ratio["dead_lettered"]) == (299, 2, 1)


async def test_filter_and_map_batches_fail_mid_batch_alone_with_the_expression_error() -> None:
    """The runtime's batches let map and filter compute a whole batch before emitting
    (GearBatch.apply_bodies): a failing expression mid-batch still fails that message alone,
    with the message-level error naming the config key, and what the messages before it
    produced goes out once, in order, with the ids the message in hand would give."""
    from fluxmix.gears.transform import Filter, Map

    cat = h.catalog()
    cat.register("map", Map)
    cat.register("filter", Filter)
    scen = h.scenario(
        "midfail",
        [("src", "t-counter", {"count": 600}),
         ("big", "filter", {"where": "seq % 3 != 0 and 100 / (seq - 130) > -1000"}),
         ("tag", "map", {"set": {"t": {"expr": "seq * 2"}, "c": 1}}),
         ("sink", "t-collect", {}), ("errors", "t-collect", {}), ("rej", "t-collect", {})],
        [("src.out", "big.in", {"max_deliver": 3, "retry_delay": 0}), ("big.out", "tag.in"), ("tag.out", "sink.in"),
         ("big.error", "errors.in"), ("big.rejected", "rej.in")],
    )
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["sink"]) == 399 and len(h.SEEN["errors"]) == 1 and len(h.SEEN["rej"]) == 200)
    await rt.stop()
    assert seqs("sink") == [n for n in range(1, 601) if n != 130 and n % 3]
    assert seqs("rej") == list(range(3, 601, 3))
    assert h.SEEN["rej"][0]["_id"] == derived_id(source_id("midfail", "src", 3), "big", "rejected", 0)
    assert all(b["t"] == 2 * b["seq"] and b["c"] == 1 for b in h.SEEN["sink"])
    error = h.SEEN["errors"][0]
    assert error["seq"] == 130
    assert error["_headers"]["error"].startswith("ExpressionEvalError: where: ")
    big = rt.status().to_json()["gears"]["big"]
    assert (big["handled"], big["errors"], big["dead_lettered"]) == (599, 3, 1)
    first = h.SEEN["sink"][0]
    assert first["_id"] == derived_id(derived_id(source_id("midfail", "src", 1), "big", "out", 0), "tag", "out", 0)
    wires = rt.status().to_json()["wires"]
    assert wires["big.out->tag.in"]["sent"] == wires["big.out->tag.in"]["received"] == 399


async def test_emit_each_fans_out_one_frozen_body_with_the_same_ids_to_every_wire() -> None:
    from fluxmix.gears.transform import Map

    cat = h.catalog()
    cat.register("map", Map)
    scen = h.scenario("eachfan", [("src", "t-counter", {"count": 300}), ("m", "map", {"set": {"x": 1}}),
                                  ("a", "t-collect", {}), ("b", "t-collect", {})],
                      [("src.out", "m.in"), ("m.out", "a.in"), ("m.out", "b.in")])
    rt = make(scen, catalog=cat)
    await run_until(rt, lambda: len(h.SEEN["a"]) == 300 and len(h.SEEN["b"]) == 300)
    await rt.stop()
    assert seqs("a") == seqs("b") == list(range(1, 301))
    assert [x["_id"] for x in h.SEEN["a"]] == [x["_id"] for x in h.SEEN["b"]]
    assert h.SEEN["a"][0]["_id"] == derived_id(source_id("eachfan", "src", 1), "m", "out", 0)
