"""Streams and consumers: created when missing, updated when a setting drifted, never purged.

Stream settings and why:
- work-queue retention: an acked message is removed, so the stream only ever holds what is still
  owed to a consumer; no max-age, no silent discard of old messages. A message on a wire whose
  consumer does not exist (yet) stays until one does.
- file storage, replicas from the settings (3 on a cluster), a duplicate window sized by
  `duplicate_window_for()` (60 s by default; `--nats-duplicate-window`).
- `allow_batched` (nats-server >= 2.14): a run of messages a gear emits at once is published as one
  fast-ingest batch with one PubAck (publisher.py); a server without it refuses batches with
  err_code 10205 and the publisher goes message by message.
- size limit: unlimited by default; with `max_bytes` set, `discard: new` makes a full stream refuse
  new messages, which the publisher turns into backpressure (it retries), never into loss.
- backlog bound per wire: `max_msgs_per_subject` (one subject per wire; 100,000 by default,
  `--nats-wire-backlog`) with `discard_new_per_subject`: a wire whose consumer fell that far behind
  refuses new messages, which the publisher turns into backpressure on the producing gear. An
  unpaced endless source therefore cannot fill the disk, and nothing is dropped.
- ensure_stream() adds the stream, or updates it when a setting differs; nothing here purges or
  deletes a stream or a consumer (an operator removes consumers of wires gone for good with
  `nats consumer rm`).
- JetStream acks a publish once the message is in the page cache (the server's default
  `sync_interval` is 2 minutes); a process crash loses nothing, a power loss of a single node can.
  Run a replicated cluster (deploy/) or set `sync_interval: always` on the server for more.

Consumers: durable pull consumers, explicit acks, `ack_wait` (30 s by default, `--nats-ack-wait`;
kept alive with in-progress acks while a slow message is being handled), no server-side delivery
limit (`max_deliver` -1): the wire's own `max_deliver` decides when a failing message is
dead-lettered, so a message is never stranded unacked by the server giving up on it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
import nats.js.errors

from fluxmix.errors import TransportError
from fluxmix.scenario import WireSpec
from fluxmix.transports.nats.naming import consumer_name, stream_name, stream_subjects, wire_subject

log = logging.getLogger("fluxmix.transports.nats")


# How long a mixer may take to come back after a crash (a supervisor's restart and start-up) and
# still have the ids it published recognised. A mixer down for longer resumes with at-least-once
# across that gap (a de-duplicating sink, e.g. file-out, still absorbs the repeats).
RESTART_ALLOWANCE = 30.0


def duplicate_window_for(ack_wait: float) -> float:
    """The shortest duplicate window that still covers every re-publish of an id.

    Why the window matters: JetStream keeps every Nats-Msg-Id it saw for the whole window (about
    300 B each measured on nats-server 2.15, twice that in RSS with Go's GC headroom), so the
    server's memory is rate x window; the 120 s used before cost 0.4-0.5 GiB at 6,000 msg/s.
    What it must cover, latest first:
    - a derived message re-published after its parent is redelivered: the parent comes back
      `ack_wait` after its delivery at the latest while the mixer runs, or when a crashed mixer
      is back (RESTART_ALLOWANCE);
    - a source replaying from its checkpoint after a crash: the checkpoint interval (0.5 s for
      the built-in sources) plus the restart, well inside the first case;
    - a publish resent after a lost PubAck: `ack_timeout` (5 s) plus a reconnect.
    Every publish keeps its id (see publisher.py): the window, not the id, is what costs memory.
    """
    return ack_wait + RESTART_ALLOWANCE


@dataclass(slots=True)
class StreamSettings:
    replicas: int = 1
    duplicate_window: float = 60.0  # duplicate_window_for(ack_wait)
    max_bytes: int = -1
    ack_wait: float = 30.0
    max_ack_pending: int = 1024
    wire_backlog: int = -1  # messages per wire (= per subject); -1: unbounded
    batched: bool = True  # allow fast-ingest batches (one PubAck per batch; see publisher.py)


def stream_config(settings: StreamSettings, scenario_name: str) -> StreamConfig:
    return StreamConfig(
        name=stream_name(scenario_name),
        description=f"fluxmix scenario {scenario_name}",
        subjects=stream_subjects(scenario_name),
        retention=RetentionPolicy.WORK_QUEUE,
        storage=StorageType.FILE,
        num_replicas=settings.replicas,
        duplicate_window=settings.duplicate_window,
        max_bytes=settings.max_bytes,
        discard=DiscardPolicy.NEW,
        max_msgs_per_subject=settings.wire_backlog,
        discard_new_per_subject=settings.wire_backlog > 0,
        max_age=0,
        deny_delete=False,
        deny_purge=False,
        allow_batched=settings.batched or None,
    )


def consumer_config(settings: StreamSettings, scenario_name: str, spec: WireSpec) -> ConsumerConfig:
    name = consumer_name(spec)
    return ConsumerConfig(
        name=name,
        durable_name=name,
        description=f"fluxmix wire {spec.key}",
        deliver_policy=DeliverPolicy.ALL,
        ack_policy=AckPolicy.EXPLICIT,
        ack_wait=settings.ack_wait,
        max_deliver=-1,
        filter_subject=wire_subject(scenario_name, spec),
        max_ack_pending=settings.max_ack_pending,
        max_waiting=64,
    )


async def ensure_stream(js: JetStreamContext, settings: StreamSettings, scenario_name: str) -> StreamConfig:
    """Add the scenario's stream, or update the settings that drifted (never re-create it)."""
    wanted = stream_config(settings, scenario_name)
    name = wanted.name
    assert name is not None
    try:
        info = await js.stream_info(name)
    except nats.js.errors.NotFoundError:
        await js.add_stream(wanted)
        log.info("created JetStream stream %s (replicas %d)", name, settings.replicas)
        return wanted
    have = info.config
    if have.retention != RetentionPolicy.WORK_QUEUE:
        raise TransportError(
            f"stream {name} exists with retention {have.retention}; fluxmix needs workqueue "
            "(it was not created by fluxmix: rename or remove it)"
        )
    changes = {
        "subjects": sorted(set(have.subjects or []) | set(wanted.subjects or [])),
        "num_replicas": wanted.num_replicas,
        "duplicate_window": wanted.duplicate_window,
        "max_bytes": wanted.max_bytes,
        "discard": wanted.discard,
        "max_msgs_per_subject": wanted.max_msgs_per_subject,
        "discard_new_per_subject": wanted.discard_new_per_subject,
        "allow_batched": bool(wanted.allow_batched),
    }
    current = {
        "subjects": sorted(have.subjects or []),
        "num_replicas": have.num_replicas,
        "duplicate_window": have.duplicate_window,
        "max_bytes": have.max_bytes,
        "discard": have.discard,
        "max_msgs_per_subject": have.max_msgs_per_subject if have.max_msgs_per_subject is not None else -1,
        "discard_new_per_subject": bool(have.discard_new_per_subject),
        "allow_batched": bool(have.allow_batched),
    }
    if changes != current:
        config = StreamConfig.from_response(have.as_dict())
        for key, value in changes.items():
            setattr(config, key, value)
        await js.update_stream(config)
        log.info("updated JetStream stream %s: %s", name, {k: v for k, v in changes.items() if current[k] != v})
    return wanted


async def ensure_consumer(js: JetStreamContext, settings: StreamSettings, scenario_name: str, spec: WireSpec) -> None:
    # add_consumer creates or updates; pull_subscribe(config=...) would silently keep an old config
    await js.add_consumer(stream_name(scenario_name), consumer_config(settings, scenario_name, spec))
