"""A small client for the mixer's HTTP API (stdlib urllib: the CLI needs no async stack).

Every failure becomes a MixerApiError with one line a person can act on. Answers are checked
against the JSON Schema of what the caller will read (`get(path, schema)`), so a URL that points
at something that is not a mixer (a web page, a JSON list, deeply nested JSON) is one error line,
never a traceback from code that assumed a mixer's answer.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

import jsonschema

from fluxmix.errors import MixerApiError, UserError, bound_line, excerpt

DEFAULT_URL = "http://127.0.0.1:8470"
# Answers that mean the request itself was wrong (bad ref, refused path, nothing to reload):
# the operator's to fix, exit status 2 like other bad input.
USER_STATUSES = frozenset({400, 403, 404, 409, 413, 415})


class MixerClient:
    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 120.0) -> None:
        _check_url(url)
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str, schema: dict[str, Any] | None = None) -> Any:
        """The JSON answer to GET `path`, checked against `schema` when given."""
        body = self._ok(*self.request("GET", path))
        if schema is not None:
            self.check(body, schema, path)
        return body

    def check(self, body: Any, schema: dict[str, Any], what: str) -> None:
        """MixerApiError unless `body` has the shape a mixer's answer to `what` has."""
        if isinstance(body, str):
            raise MixerApiError(f"{self.url} is not a fluxmix mixer: {what} answered with no JSON ({excerpt(body.strip())})")
        try:
            error = next(iter(jsonschema.Draft202012Validator(schema).iter_errors(body)), None)
        except RecursionError:
            error = True
        if error is not None:
            where = error.json_path if not isinstance(error, bool) else "$"
            expected = f"expected {error.validator} {error.validator_value!r}" if not isinstance(error, bool) else "too deep"
            raise MixerApiError(
                f"{self.url} is not a fluxmix mixer: its answer to {what} has the wrong shape at {where} ({bound_line(expected, 120)})"
            )

    def post(self, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, body) for 2xx and for 409/422/500 that carry a journal entry or an error."""
        return self.request("POST", path, payload)

    @property
    def is_local(self) -> bool:
        """The URL names this machine (a loopback address): the home's token file may be sent."""
        from fluxmix.mixer.settings import is_loopback

        return is_loopback(urllib.parse.urlsplit(self.url).hostname or "")

    def ok(self, status: int, body: Any) -> Any:
        """`body`, or MixerApiError (UserError for a 4xx about the request) with its one line."""
        if status >= 400:
            message = f"the mixer at {self.url} answered {status}: {_reason(body)}"
            raise UserError(message) if status in USER_STATUSES else MixerApiError(message)
        return body

    _ok = ok

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None, *,
                raw: bytes | None = None, headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """(status, decoded body). `raw` sends JSON the caller already encoded (a global's value
        may be any JSON, not only an object); `headers` are added as given."""
        if raw is not None:
            data: bytes | None = raw
        else:
            data = json.dumps(payload).encode() if payload is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        if self.token:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                return response.status, _decode(response.read(), response.headers.get_content_type())
        except urllib.error.HTTPError as error:
            body = _decode(error.read(), error.headers.get_content_type() if error.headers else "")
            if error.code == 401:
                raise MixerApiError(
                    f"the mixer at {self.url} refused the request: 401 unauthorized "
                    "(pass --token or set FLUXMIX_API_TOKEN; on the mixer's machine, the token is in the "
                    "api-token file of its store directory, read when FLUXMIX_HOME or --store matches)"
                ) from None
            return error.code, body
        except urllib.error.URLError as error:
            raise MixerApiError(f"cannot reach the mixer at {self.url}: {_why(error.reason)}") from None
        except (socket.timeout, TimeoutError):
            raise MixerApiError(f"the mixer at {self.url} did not answer within {self.timeout:g}s") from None
        except (ConnectionError, OSError) as error:
            raise MixerApiError(f"cannot reach the mixer at {self.url}: {_why(error)}") from None


def _check_url(url: str) -> None:
    """A mistyped --url is bad input (exit 2), not a traceback from urllib or a confusing DNS error."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError for a port out of range or not a number
    except ValueError as error:
        raise UserError(f"--url {url!r}: not a valid URL ({error})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--url {url!r}: expected http://HOST:PORT (e.g. http://127.0.0.1:8470)")


def _decode(raw: bytes, content_type: str) -> Any:
    if content_type == "application/json" or raw[:1] in (b"{", b"["):
        try:
            return json.loads(raw)
        except (ValueError, RecursionError):  # RecursionError: nested deeper than the parser goes
            pass
    return raw.decode("utf-8", "replace")


def _reason(body: Any) -> str:
    """The `error` (or `reason`) a mixer answers with; anything else is described, not dumped."""
    if isinstance(body, dict):
        for key in ("error", "reason"):
            if isinstance(body.get(key), str) and body[key]:
                return bound_line(body[key])
        return "an answer without an error message (is this a fluxmix mixer?)"
    if isinstance(body, str) and body.strip():
        return excerpt(body.strip().splitlines()[0])
    return "no details" if not body else "an answer that is not a fluxmix mixer's"


def _why(reason: Any) -> str:
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused"
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return "timed out"
    if isinstance(reason, socket.gaierror):
        return f"unknown host ({reason.strerror})"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)
