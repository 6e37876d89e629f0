"""A small client for the mixer's HTTP API (stdlib urllib: the CLI needs no async stack).

Every failure becomes a MixerApiError with one line a person can act on.
"""

from __future__ import annotations

import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from fluxmix.errors import MixerApiError, UserError

DEFAULT_URL = "http://127.0.0.1:8470"


class MixerClient:
    def __init__(self, url: str = DEFAULT_URL, *, token: str | None = None, timeout: float = 120.0) -> None:
        _check_url(url)
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def get(self, path: str) -> Any:
        return self._ok(*self.request("GET", path))

    def post(self, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
        """(status, body) for 2xx and for 409/422/500 that carry a journal entry or an error."""
        return self.request("POST", path, payload)

    def _ok(self, status: int, body: Any) -> Any:
        if status >= 400:
            raise MixerApiError(f"the mixer at {self.url} answered {status}: {_reason(body)}")
        return body

    def request(self, method: str, path: str, payload: dict[str, Any] | None = None) -> tuple[int, Any]:
        data = json.dumps(payload).encode() if payload is not None else (b"" if method == "POST" else None)
        request = urllib.request.Request(self.url + path, data=data, method=method)
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/json")
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
                    "(pass --token or set FLUXMIX_API_TOKEN)"
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
        except ValueError:
            pass
    return raw.decode("utf-8", "replace")


def _reason(body: Any) -> str:
    if isinstance(body, dict):
        return str(body.get("error") or body.get("reason") or body)
    return str(body).strip().splitlines()[0] if str(body).strip() else "no details"


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
