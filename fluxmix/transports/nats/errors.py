"""The one place that maps nats-py exceptions and JetStream error replies onto fluxmix's terms.

A publish outcome is one of three kinds, decided by JetStream's `err_code` (never by the HTTP-ish
`code` alone: a full stream and a leader election both answer 503):
- `RETRY`: the same message can succeed later (leader election, no responders yet, resources,
  a store or per-subject limit with discard-new: a work-queue stream frees room as its consumer
  acks, so "full" is backpressure, never loss);
- `REFUSED`: this message can never be stored as it is (too large, wrong expected stream, ...):
  it fails at once and leaves the wire, which keeps flowing.
"""

from __future__ import annotations

import enum
import json
from typing import Any

import nats.errors
import nats.js.errors

from fluxmix.errors import NatsUnavailableError, TransportError


class Outcome(enum.Enum):
    RETRY = "retry"
    REFUSED = "refused"


# JetStream err_codes after which the very same message may be stored later.
RETRY_ERR_CODES = frozenset(
    {
        10008,  # JetStream system temporarily unavailable
        10023,  # insufficient resources
        10077,  # store failed: maximum messages / bytes / per-subject exceeded (discard new)
        10158,  # duplicate message id is in process
        10163,  # expected last sequence per subject temporarily unavailable
    }
)


class PublishRefused(TransportError):
    """JetStream (or the client, for an oversized payload) refused one message for good."""

    def __init__(self, reason: str, err_code: int | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.err_code = err_code


def describe(exc: BaseException) -> str:
    """nats-py raises some errors (timeouts) with no text: name the type rather than print nothing."""
    return str(exc) or type(exc).__name__


def classify_reply(data: bytes, headers: dict[str, str] | None) -> tuple[Outcome, str, int | None]:
    """What a non-PubAck reply to a publish means: (outcome, reason, err_code)."""
    if not data:
        status = (headers or {}).get("Status", "")
        description = (headers or {}).get("Description", "")
        # 503 "no responders": no stream leader yet (restart, election): the stream comes back
        return Outcome.RETRY, f"status {status} {description}".strip(), None
    try:
        error: dict[str, Any] = json.loads(data)["error"]
    except Exception:
        return Outcome.REFUSED, "unreadable reply from JetStream", None
    err_code = error.get("err_code")
    reason = f"{error.get('description') or 'refused'} (err_code {err_code})"
    if err_code in RETRY_ERR_CODES:
        return Outcome.RETRY, reason, err_code
    if err_code is None and error.get("code") in (408, 503):
        return Outcome.RETRY, reason, err_code
    return Outcome.REFUSED, reason, err_code


def is_full(err_code: int | None, reason: str) -> bool:
    """A limit with discard-new: backpressure that lasts until the consumer frees room."""
    return err_code == 10077 and "exceeded" in reason.lower()


def api_error(exc: BaseException, what: str) -> TransportError:
    """A failed JetStream API call (provisioning) as the fluxmix error an operator reads."""
    if isinstance(exc, nats.js.errors.APIError):
        return TransportError(f"cannot {what}: {exc.description or exc} (err_code {exc.err_code})")
    return NatsUnavailableError(f"cannot {what}: {describe(exc)}")


CONNECTION_ERRORS: tuple[type[BaseException], ...] = (TimeoutError, nats.errors.Error, OSError)
