"""`expect:` lines: the grammar, validation, the state machine, and a real mixer judging them live."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Callable

import pytest

from fluxmix.checks.expect import ExpectationSyntaxError, ExpectationTracker, parse_expectation
from fluxmix.gears.catalog import Catalog
from fluxmix.scenario_yaml import load_yaml
from fluxmix.validation import validate_scenario
from tests.support.mixer import MixerProcess, generate_scenario, run_fluxmix
from tests.support.polling import block_until

# ---------------------------------------------------------------- grammar


@pytest.mark.parametrize(
    ("text", "kind", "target", "metric", "op", "threshold", "rate", "within"),
    [
        ("sink.handled >= 1000 within 60s", "gear", "sink", "handled", ">=", 1000, False, 60),
        ("rate(sink.handled) > 50/s", "gear", "sink", "handled", ">", 50, True, None),
        ("dead_letters == 0", "total", "*", "dead_lettered", "==", 0, False, None),
        ("wire source.out->large.in lag < 5000", "wire", "source.out->large.in", "lag", "<", 5000, False, None),
        ("wire by-currency.eur -> eur-file.in sent>=1 within 500ms", "wire", "by-currency.eur->eur-file.in", "sent",
         ">=", 1, False, 0.5),
        ("rate( eur-file.handled ) >= 0.5 / s within 2m", "gear", "eur-file", "handled", ">=", 0.5, True, 120),
    ],
)
def test_expectation_grammar(text: str, kind: str, target: str, metric: str, op: str, threshold: float,
                             rate: bool, within: float | None) -> None:
    exp = parse_expectation(text)
    assert (exp.kind, exp.target, exp.metric, exp.op, exp.threshold, exp.rate, exp.within) == (
        kind, target, metric, op, threshold, rate, within)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("sink.handled", "expected SUBJECT OP NUMBER"),
        ("sink.handeld > 1", "unknown gear counter 'handeld'"),
        ("sink.handled > 1/s", "'/s' applies only to rate"),
        ("wire a.out b.in lag < 1", "a wire is written"),
        ("wire a.out->b.in depth < 1", "unknown wire metric 'depth'"),
        ("deadletters == 0", "unknown total 'deadletters'"),
        ("__import__('os').system('x') == 0", "is not GEAR.COUNTER"),
        ("sink.handled > 1 within 0s", "must be positive"),
        ("x" * 400 + " > 1", "longer than"),
        (3, "must be a string"),
    ],
)
def test_expectation_grammar_refuses(text: Any, reason: str) -> None:
    with pytest.raises(ExpectationSyntaxError, match=reason.replace("(", r"\(").replace("/", "/")):
        parse_expectation(text)


SCENARIO = """\
name: live
gears:
  - {name: source, type: generate, config: {count: 5}}
  - {name: sink, type: log}
wires:
  - {from: source.out, to: sink.in, transport: memory}
"""


def test_expect_section_is_validated_with_locations() -> None:
    raw = load_yaml((SCENARIO + """\
expect:
  - snk.handled >= 1
  - wire source.out->snk.in lag < 5
  - sink.handled >=
  - dead_letters == 0
""").encode(), "live.yaml")
    problems = [str(p) for p in validate_scenario(raw, catalog=Catalog.default())]
    assert problems == [
        "expect[0]: gear 'snk' is not defined; did you mean 'sink'?",
        "expect[1]: no wire source.out->snk.in; did you mean 'source.out->sink.in'? (wires: source.out->sink.in)",
        "expect[2]: expected SUBJECT OP NUMBER [within DURATION], e.g. 'sink.handled >= 100 within 60s', "
        "'rate(sink.handled) > 50/s', 'dead_letters == 0', 'wire a.out->b.in lag < 5000'",
    ]
    raw = load_yaml((SCENARIO + "expect: dead_letters == 0\n").encode(), "live.yaml")
    assert [str(p) for p in validate_scenario(raw, catalog=Catalog.default())] == [
        "expect: must be a list of expectations like 'sink.handled >= 100 within 60s'; found the string 'dead_letters == 0'"
    ]


# ---------------------------------------------------------------- the state machine


def status(handled: int, dead: int = 0) -> dict[str, Any]:
    return {"gears": {"sink": {"handled": handled, "dead_lettered": dead}}, "wires": {}}


def test_within_is_pending_then_passing_or_failing() -> None:
    tracker = ExpectationTracker([parse_expectation("sink.handled >= 10 within 5s")], started=0.0)
    (st,) = tracker.states
    tracker.observe(status(0), now=1.0)
    assert st.state == "pending" and "4s left" in st.reason
    tracker.observe(status(10), now=2.0)
    assert st.state == "passing" and st.value == 10
    late = ExpectationTracker([parse_expectation("sink.handled >= 10 within 5s")], started=0.0)
    late.observe(status(3), now=6.0)
    assert late.states[0].state == "failing"
    assert late.states[0].reason == "sink.handled = 3, needs >= 10 within 5s"


def test_rate_passes_fails_and_recovers() -> None:
    tracker = ExpectationTracker([parse_expectation("rate(sink.handled) > 1/s")], started=0.0, rate_window=5.0)
    (st,) = tracker.states
    tracker.observe(status(0), now=0.0)
    assert st.state == "pending"  # one sample is no rate
    tracker.observe(status(20), now=2.0)
    assert (st.state, st.value) == ("passing", 10)
    for t in range(3, 10):  # nothing more arrives: the window slides past the burst
        tracker.observe(status(20), now=float(t))
    assert st.state == "failing" and st.value == 0
    tracker.observe(status(40), now=10.0)
    assert st.state == "passing"
    assert tracker.all_passing()


def test_a_plain_condition_is_judged_at_once() -> None:
    tracker = ExpectationTracker([parse_expectation("dead_letters == 0")], started=0.0)
    tracker.observe(status(5), now=0.0)
    assert tracker.all_passing()
    tracker.observe(status(5, dead=2), now=1.0)
    assert [s.state for s in tracker.failing()] == ["failing"]
    assert tracker.states[0].reason == "dead_letters = 2, needs == 0"


# ---------------------------------------------------------------- a real mixer


def follow_scenario(name: str = "live") -> str:
    return f"""\
name: {name}
gears:
  - {{name: feed, type: file-in, config: {{path: in.jsonl, follow: true, poll_interval: 0.05}}}}
  - {{name: big, type: filter, config: {{where: 'amount > 0'}}}}
  - {{name: sink, type: file-out, config: {{path: out/live.jsonl}}}}
wires:
  - {{from: feed.out, to: big.in, transport: memory, max_deliver: 1}}
  - {{from: big.out, to: sink.in, transport: memory}}
expect:
  - rate(sink.handled) > 0/s
  - sink.handled >= 3 within 60s
  - dead_letters == 0
"""


class Feeder:
    """Appends one good line every `every` seconds while on (a test's own traffic source)."""

    def __init__(self, path: Path, every: float = 0.2) -> None:
        self.path, self.every = path, every
        self.on = threading.Event()
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.done.is_set():
            if self.on.is_set():
                n += 1
                with self.path.open("a") as handle:
                    handle.write(json.dumps({"n": n, "amount": 5}) + "\n")
            time.sleep(self.every)

    def stop(self) -> None:
        self.done.set()
        self.thread.join(timeout=5)


def states(proc: MixerProcess) -> dict[str, str]:
    return {e["expect"]: e["state"] for e in proc.status()["expectations"]}


def test_expectations_pass_fail_and_recover_on_a_running_mixer(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    (tmp_path / "in.jsonl").write_text("")
    path = tmp_path / "live.yaml"
    path.write_text(follow_scenario())
    proc = start_mixer("-s", str(path))
    proc.wait_ready()
    feeder = Feeder(tmp_path / "in.jsonl")
    rate, count, dead = "rate(sink.handled) > 0/s", "sink.handled >= 3 within 60s", "dead_letters == 0"

    def check() -> Any:
        return run_fluxmix(home, tmp_path, "mixer", "check", "--url", proc.url)

    try:
        assert states(proc)[count] == "pending"
        assert check().returncode == 1  # not all passing yet
        feeder.on.set()
        block_until(lambda: set(states(proc).values()) == {"passing"}, "every expectation passing", proc=proc)
        ok = check()
        assert ok.returncode == 0, ok.stdout + ok.stderr
        assert "live: 3 of 3 expectations passing" in ok.stdout
        metrics = proc.get("/metrics")
        assert f'fluxmix_expectation_passing{{expectation="{rate}"}} 1.0' in metrics

        feeder.on.clear()  # traffic stops: the rate falls to zero
        block_until(lambda: states(proc)[rate] == "failing", "the rate to fail", proc=proc)
        failed = check()
        assert failed.returncode == 1
        line = next(line for line in failed.stdout.splitlines() if rate in line)
        assert line.startswith("FAILING") and "rate(sink.handled) = 0/s, needs > 0/s" in line
        assert f'fluxmix_expectation_passing{{expectation="{rate}"}} 0.0' in proc.get("/metrics")
        entry = next(e for e in proc.status()["expectations"] if e["expect"] == rate)
        assert entry["value"] == 0 and entry["since"]

        feeder.on.set()  # traffic again: it recovers (`check --wait` polls until it does)
        recovered = run_fluxmix(home, tmp_path, "mixer", "check", "--wait", "30", "--url", proc.url)
        assert recovered.returncode == 0, recovered.stdout + recovered.stderr
        assert states(proc)[rate] == "passing"

        with (tmp_path / "in.jsonl").open("a") as handle:  # no amount: the filter fails, dead-lettered
            handle.write(json.dumps({"n": "bad"}) + "\n")
        block_until(lambda: states(proc)[dead] == "failing", "dead_letters to fail", proc=proc)
        assert "dead_letters = 1, needs == 0" in check().stdout
    finally:
        feeder.stop()
    assert proc.stop() == 0, proc.output()[-3000:]


def test_verify_within_rolls_back_a_silent_sink_and_keeps_one_that_delivers(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    good = tmp_path / "good.yaml"
    good.write_text(generate_scenario("good", "seq > 0", "sink.handled >= 5 within 20s"))
    silent = tmp_path / "silent.yaml"  # its filter keeps nothing: the sink never handles a message
    silent.write_text(generate_scenario("silent", "seq < 0", "sink.handled >= 1 within 20s"))
    better = tmp_path / "better.yaml"
    better.write_text(generate_scenario("better", "seq % 2 == 0", "sink.handled >= 3 within 20s"))

    proc = start_mixer("-s", str(good), "--verify-within", "3s", "--no-watch")
    proc.wait_ready()
    first = proc.wait_journal(lambda e: e["trigger"] == "startup", "the startup activation")
    assert first["outcome"] == "activated" and "verified: 2 expectation(s) passing" in first["reason"]
    assert "verify" in first["phases"]

    refused = run_fluxmix(home, tmp_path, "mixer", "activate", str(silent), "--url", proc.url)
    assert refused.returncode == 1
    entry = proc.journal()[0]
    assert entry["outcome"] == "rolled-back"
    assert "silent:v0.1.0 started but its expectations did not pass within 3s" in entry["reason"]
    assert "sink.handled >= 1 within 20s: pending: sink.handled = 0, needs >= 1" in entry["reason"]
    assert "rolled back to good:v0.1.0" in entry["reason"]
    assert entry["problems"] and entry["problems"][0].startswith("sink.handled >= 1 within 20s: pending")
    now = proc.status()
    assert now["scenario"]["name"] == "good" and now["ready"]
    assert {e["expect"] for e in now["expectations"]} == {"sink.handled >= 5 within 20s", "dead_letters == 0"}

    kept = run_fluxmix(home, tmp_path, "mixer", "activate", str(better), "--url", proc.url)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert kept.stdout.startswith("activated: started better:v0.1.0")
    assert proc.status()["scenario"]["name"] == "better"
    assert proc.stop() == 0, proc.output()[-3000:]


def test_no_value_yet_waits_instead_of_failing() -> None:
    """A durable wire reports its lag after its first refresh: until then there is nothing to judge."""
    tracker = ExpectationTracker([parse_expectation("wire a.out->b.in lag < 10"),
                                  parse_expectation("wire a.out->b.in lag < 10 within 2s")], started=0.0)
    tracker.observe({"gears": {}, "wires": {"a.out->b.in": {"sent": 0}}}, now=3.0)
    assert [s.state for s in tracker.states] == ["pending", "failing"]
    tracker.observe({"gears": {}, "wires": {"a.out->b.in": {"pending": 4}}}, now=4.0)
    assert tracker.all_passing()


def test_verify_within_at_startup_without_a_known_good_leaves_the_mixer_idle_and_not_ready(
    tmp_path: Path, home: Path, start_mixer: Callable[..., MixerProcess]  # noqa: F811
) -> None:
    silent = tmp_path / "silent.yaml"
    silent.write_text(generate_scenario("silent", "seq < 0", "sink.handled >= 1 within 20s"))
    proc = start_mixer("-s", str(silent), "--verify-within", "1s", "--no-watch")
    block_until(lambda: proc.try_get("/healthz"), "the API to answer", proc=proc)
    entry = proc.wait_journal(lambda e: e["trigger"] == "startup", "the startup activation")
    assert entry["outcome"] == "failed"
    assert "expectations did not pass within 1s" in entry["reason"]
    assert "no last known good scenario to roll back to" in entry["reason"]
    # the journal row is written before startup finishes; until then /readyz rightly says "starting"
    code, body = block_until(lambda: (r := proc.request("GET", "/readyz"))[1].get("reason") != "starting" and r,
                             "startup to finish", proc=proc)
    assert code == 503 and "expectations did not pass" in body["reason"]
    assert proc.status()["expectations"] == []
    assert proc.stop() == 0, proc.output()[-3000:]
