"""The runtime: one running scenario, as runners (one per gear) connected by a wiring.

    core      Runtime: build, start and stop the whole graph; pause/resume sources; status
    runner    GearRunner: one gear instance's lifecycle and message path
    context   the GearContext a gear sees (emit, checkpoints) and the batch it handles
    wiring    the wires and who they connect, changeable while running
    reload    a partial reload: replace only the gears and wires a scenario change touches
"""

from fluxmix.runtime.context import BUFFER_MAX, CheckpointStore, MemoryCheckpoints, SourceGuard, runtime_loop
from fluxmix.runtime.core import (
    DEFAULT_START_TIMEOUT,
    DEFAULT_STOP_TIMEOUT,
    GEAR_STATES,
    Runtime,
    StopReport,
    topological_order,
)
from fluxmix.runtime.runner import (
    SOURCE_HEALTHY_AFTER,
    SOURCE_RESTART_MAX,
    SOURCE_RESTART_MIN,
    GearRunner,
    SinkObserver,
)

from fluxmix.status import GearCounters

__all__ = [
    "BUFFER_MAX",
    "CheckpointStore",
    "SourceGuard",
    "DEFAULT_START_TIMEOUT",
    "DEFAULT_STOP_TIMEOUT",
    "GEAR_STATES",
    "GearCounters",
    "GearRunner",
    "MemoryCheckpoints",
    "Runtime",
    "SOURCE_HEALTHY_AFTER",
    "SOURCE_RESTART_MAX",
    "SOURCE_RESTART_MIN",
    "SinkObserver",
    "StopReport",
    "runtime_loop",
    "topological_order",
]
