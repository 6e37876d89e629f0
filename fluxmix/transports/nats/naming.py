"""Stream, subject, consumer and message-id names of standard wires.

Stable across scenario versions, reloads and restarts, so unacked messages are never orphaned;
everything derives from the scenario *name* and the wire's endpoints, never the hash:

    stream    FLUXMIX_<scenario>                 one per scenario name
    subjects  fluxmix.<scenario>.>               the stream's only subject filter
    subject   fluxmix.<scenario>.<src-gear>.<src-port>.<dst-gear>.<dst-port>     one per wire
    consumer  <src-gear>_<src-port>__<dst-gear>_<dst-port>_<hash8>               durable, pull
    msg id    Nats-Msg-Id: <consumer>:<message id>

`<scenario>` is the scenario name when it is a valid NATS token (no dots), otherwise the name with
dots as `_` plus an 8-hex hash of the real name; gear and port tokens are sanitised the same way.
The consumer's hash suffix is over the exact wire key (`a.out->b.in`), so two wires can never share
a durable even when sanitising makes their readable parts equal. The message id is scoped to the
wire, so fan-out of one message to two wires in the same stream is not de-duplicated away.
"""

from __future__ import annotations

import hashlib
import re

from fluxmix.scenario import WireSpec

STREAM_PREFIX = "FLUXMIX_"
SUBJECT_PREFIX = "fluxmix"

_TOKEN_OK = re.compile(r"^[A-Za-z0-9_-]+$")
_TOKEN_BAD_CHARS = re.compile(r"[^A-Za-z0-9_-]")


def _short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode(), digest_size=4).hexdigest()


def _token(text: str) -> str:
    """`text` as one NATS subject token / name part: unchanged when valid, else sanitised + hash."""
    if _TOKEN_OK.match(text):
        return text
    return f"{_TOKEN_BAD_CHARS.sub('_', text)}_{_short_hash(text)}"


def scenario_token(name: str) -> str:
    return _token(name)


def stream_name(scenario_name: str) -> str:
    return f"{STREAM_PREFIX}{scenario_token(scenario_name)}"


def stream_subjects(scenario_name: str) -> list[str]:
    return [f"{SUBJECT_PREFIX}.{scenario_token(scenario_name)}.>"]


def wire_subject(scenario_name: str, spec: WireSpec) -> str:
    parts = (spec.source.gear, spec.source.port, spec.target.gear, spec.target.port)
    return ".".join([SUBJECT_PREFIX, scenario_token(scenario_name), *(_token(p) for p in parts)])


def consumer_name(spec: WireSpec) -> str:
    readable = f"{_token(spec.source.gear)}_{_token(spec.source.port)}__{_token(spec.target.gear)}_{_token(spec.target.port)}"
    return f"{readable}_{_short_hash(spec.key)}"


def msg_id(consumer: str, message_id: str) -> str:
    """The Nats-Msg-Id of a message on a wire: scoped to the wire (see the module doc)."""
    return f"{consumer}:{message_id}"
