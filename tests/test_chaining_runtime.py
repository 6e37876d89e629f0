"""Every promise of tests/test_runtime.py again, with every eligible memory wire chained.

The runtime chains only wires into built-in gears (fluxmix.runtime.chaining); the test gears are
not built-ins, so here the consumer check is widened to every type: the same scenarios then run
their batches in the producer's task wherever the wiring allows it (no fan-out, no fan-in, not
from an `error` port), and must keep order, backpressure, retries, dead letters and drains.
"""

from __future__ import annotations

import pytest

from fluxmix.runtime import chaining
from tests.test_runtime import *  # noqa: F401,F403  (collected again here, under the fixture below)
from tests.test_runtime import _clean  # noqa: F401  (autouse: not exported by *)


@pytest.fixture(autouse=True)
def _chain_every_eligible_wire(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chaining, "runs_inline", lambda kind, origins: True)


# Not collected here, because their premise does not exist on a chained wire (each still runs,
# unchained, in tests/test_runtime.py):
# - test_stop_drains_everything_in_flight asserts report.drained > 0: a chained send returns only
#   once the batch is handled, so at stop nothing is in flight and 0 is drained (its other
#   assertions, every seq exactly once and checkpoint = emitted + 1, held);
# - test_stop_timeout_abandons_and_counts_what_was_left waits for 5 messages queued in front of a
#   hung sink: a chained sender is itself held by the hung sink after the first;
# - test_a_failing_message_in_a_batch_is_retried_and_dead_lettered_alone needs batches of several
#   messages from a source emitting one at a time, which only a queue accumulates.
del test_stop_drains_everything_in_flight  # noqa: F821
del test_stop_timeout_abandons_and_counts_what_was_left  # noqa: F821
del test_a_failing_message_in_a_batch_is_retried_and_dead_lettered_alone  # noqa: F821
