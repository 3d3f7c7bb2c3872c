"""Retry policy for storage reads: transient failures are retried with bounded exponential backoff.

What is transient (worth another try): a dropped or reset connection, a timeout, an HTTP 5xx, throttling
(HTTP 429, S3 "SlowDown", GCS "rateLimitExceeded"), an incomplete body. What is not: a missing object, a
permission error, bad arguments, corrupt data; those are raised at once, unchanged.

The client libraries retry too (s3fs up to `retries` times, botocore per its retry mode); this layer sits
above them and adds three things: it also retries what they give up on (s3fs raises a dropped connection in
the middle of a body after its own tries), its budget is bounded in attempts AND in wall time, and its final
error, `StorageReadError`, names the object URL and the byte range. Total work is bounded by this policy's
`attempts` times the client's own tries.

Backoff: wait d_i = min(max_delay, base_delay * 2**i) before try i + 2, "equal jitter" (d_i / 2 plus a
uniform draw in [0, d_i / 2]) so that many readers failing together do not retry in lockstep. Jitter changes
timing only, never data: the bytes returned are the object's bytes whatever the number of tries.

Configuration: the module-level policy (`get_policy` / `set_policy` / `using(policy)`), initialised from the
environment: RLDS_LOADER_READ_ATTEMPTS (default 6), RLDS_LOADER_READ_DEADLINE seconds (default 120),
RLDS_LOADER_READ_BASE_DELAY (0.2) and RLDS_LOADER_READ_MAX_DELAY (10). Tests pass `rng=random.Random(seed)`.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from rlds_loader.errors import RLDSError

log = logging.getLogger(__name__)
T = TypeVar("T")

__all__ = ["RetryPolicy", "StorageReadError", "get_policy", "is_transient", "retry_stats", "set_policy",
           "using"]


class StorageReadError(RLDSError, OSError):
    """A read that kept failing with transient errors until the retry budget ran out.

    `url` is the object, `start`/`end` the byte range [start, end) (None: the whole object), `attempts` the
    number of tries; the last error is the `__cause__`.
    """

    def __init__(self, message: str, url: str = "", start: int | None = None, end: int | None = None,
                 attempts: int = 0):
        super().__init__(message)
        self.url, self.start, self.end, self.attempts = url, start, end, attempts

    def __str__(self) -> str:  # OSError's own __str__ would format the args as (errno, strerror)
        return str(self.args[0]) if self.args else ""


# ----------------------------------------------------------------------------------------- classification

# Never transient, even when a library's message happens to mention a status code.
_PERMANENT = (FileNotFoundError, PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError,
              ValueError, TypeError, KeyError, IndexError, NotImplementedError, MemoryError)
_TRANSIENT = (ConnectionError, TimeoutError)  # ConnectionError: reset, aborted, refused, broken pipe
_TRANSIENT_ERRNO = {errno.EBUSY, errno.EAGAIN, errno.ECONNRESET, errno.ECONNABORTED, errno.ECONNREFUSED,
                    errno.ETIMEDOUT, errno.EPIPE, errno.ENETUNREACH, errno.ENETDOWN, errno.EHOSTUNREACH,
                    getattr(errno, "EREMOTEIO", errno.EIO)}
# Class names of the client libraries' transient errors (matched by name: none of them is imported here).
_TRANSIENT_NAMES = {
    # botocore
    "EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
    "ConnectionError", "HTTPClientError", "ResponseStreamingError", "IncompleteReadError",
    "ResponseParserError", "ProxyConnectionError",
    # aiohttp
    "ClientPayloadError", "ServerDisconnectedError", "ClientConnectionError", "ClientOSError",
    "ServerTimeoutError", "ClientConnectorError",
    # http.client, urllib3, requests, fsspec
    "IncompleteRead", "RemoteDisconnected", "ProtocolError", "ChunkedEncodingError", "FSTimeoutError",
    # google (gcsfs, google-api-core)
    "TransportError", "ServiceUnavailable", "InternalServerError", "TooManyRequests", "GatewayTimeout",
    "BadGateway", "RetryError",
}
_TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded",
                    "TooManyRequests", "RequestTimeout", "RequestTimeoutException", "ServiceUnavailable",
                    "InternalError", "InternalServerError", "rateLimitExceeded", "backendError",
                    "PriorRequestNotComplete"}
_TRANSIENT_TEXT = ("SlowDown", "reduce your request rate", "Service Unavailable", "ServiceUnavailable",
                   "Throttl", "Too Many Requests", "rateLimitExceeded", "InternalError",
                   "Internal Server Error", "Connection reset", "Server disconnected", "timed out")


def _http_status(exc: BaseException) -> int | None:
    """The HTTP status an exception carries, if any (botocore ClientError, gcsfs HttpError, aiohttp, ...)."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore ClientError
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        if isinstance(status, int):
            return status
    for attr in ("status", "code", "status_code"):
        value = getattr(exc, attr, None)
        if isinstance(value, int) and 100 <= value <= 599:
            return value
    return None


def _error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return str(response.get("Error", {}).get("Code", ""))
    return ""


def _one_is_transient(exc: BaseException) -> bool:
    if isinstance(exc, _TRANSIENT):
        return True
    if any(cls.__name__ in _TRANSIENT_NAMES for cls in type(exc).__mro__):
        return True
    status = _http_status(exc)
    if status is not None and (status >= 500 or status in (408, 429)):
        return True
    if _error_code(exc) in _TRANSIENT_CODES:
        return True
    if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
        return True
    text = str(exc)
    return any(t in text for t in _TRANSIENT_TEXT)


def is_transient(exc: BaseException) -> bool:
    """True if a read that raised `exc` may succeed when tried again.

    The exception and its causes are examined (s3fs wraps botocore's errors in OSError with the original as
    `__cause__`); an exception of a permanent kind (missing object, permission, bad argument) is never
    transient, whatever it wraps. Our own errors (corrupt data, ...) are permanent.
    """
    if isinstance(exc, (*_PERMANENT, RLDSError)):
        return False
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen and len(seen) < 16:
        seen.add(id(current))
        if _one_is_transient(current):
            return True
        current = current.__cause__ or current.__context__
    return False


# ------------------------------------------------------------------------------------------------- policy

def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        log.warning("ignoring %s=%r (not a number)", name, os.environ.get(name))
        return default


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long a storage read is tried.

    attempts     tries of one read in all (1 = no retry)
    base_delay   seconds of backoff before the second try; doubles with every further try
    max_delay    cap on one wait
    deadline     seconds from the first try after which no new try starts (the budget in wall time)
    rng          source of jitter; None: the system's randomness (timing only, never data)
    sleep        how to wait (tests may count the waits)
    """

    attempts: int = 6
    base_delay: float = 0.2
    max_delay: float = 10.0
    deadline: float = 120.0
    rng: random.Random | None = field(default=None, compare=False)
    sleep: Callable[[float], None] = field(default=time.sleep, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"RetryPolicy.attempts must be >= 1, got {self.attempts}")
        if self.base_delay < 0 or self.max_delay < 0 or self.deadline < 0:
            raise ValueError("RetryPolicy delays and deadline must be >= 0")

    @classmethod
    def from_env(cls) -> RetryPolicy:
        return cls(attempts=max(1, int(_env_float("RLDS_LOADER_READ_ATTEMPTS", 6))),
                   base_delay=max(0.0, _env_float("RLDS_LOADER_READ_BASE_DELAY", 0.2)),
                   max_delay=max(0.0, _env_float("RLDS_LOADER_READ_MAX_DELAY", 10.0)),
                   deadline=max(0.0, _env_float("RLDS_LOADER_READ_DEADLINE", 120.0)))

    def delay(self, retry: int) -> float:
        """Seconds to wait before retry number `retry` (0 = the second try): equal jitter on a doubling,
        capped step."""
        step = min(self.max_delay, self.base_delay * (2.0 ** min(retry, 62)))
        draw = (self.rng or _system_random).random()
        return step / 2 + draw * step / 2

    def call(self, fn: Callable[[], T], *, url: str, start: int | None = None, end: int | None = None) -> T:
        """`fn()`, tried again on transient errors within the budget; then a StorageReadError naming `url`
        and the byte range [start, end). Permanent errors propagate at once, unchanged."""
        t0 = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                return fn()
            except Exception as e:
                if not is_transient(e):
                    raise
                self.backoff(attempt, t0, e, url=url, start=start, end=end)

    def backoff(self, attempt: int, t0: float, error: BaseException, *, url: str, start: int | None = None,
                end: int | None = None) -> None:
        """After failed try number `attempt` (1-based; the first try started at monotonic time `t0`) with
        the transient `error`: wait before the next try, or raise StorageReadError if the budget is spent."""
        _stats.add(failures=1)
        elapsed = time.monotonic() - t0
        wait = self.delay(attempt - 1)
        if attempt >= self.attempts or elapsed + wait > self.deadline:
            _stats.add(exhausted=1)
            what = "" if start is None and end is None else f" bytes [{start}, {end})"
            raise StorageReadError(
                f"{url}:{what} read failed {attempt} time(s) in {elapsed:.1f} s with transient errors; "
                f"giving up (retry budget: {self.attempts} attempts, {self.deadline:g} s; set "
                f"RLDS_LOADER_READ_ATTEMPTS / RLDS_LOADER_READ_DEADLINE). Last error: "
                f"{type(error).__name__}: {error}",
                url, start, end, attempt) from error
        log.debug("retrying %s [%s, %s) in %.3f s after %s: %s", url, start, end, wait,
                  type(error).__name__, error)
        _stats.add(retries=1)
        self.sleep(wait)


_system_random = random.SystemRandom()


class _Stats:
    """Process-wide counters (failures seen, retries made, budgets exhausted), for tests and benchmarks."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.values = {"failures": 0, "retries": 0, "exhausted": 0}

    def add(self, **counts: int) -> None:
        with self._lock:
            for k, v in counts.items():
                self.values[k] += v

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self.values)


_stats = _Stats()
_policy = RetryPolicy.from_env()


def retry_stats() -> dict[str, int]:
    """{"failures", "retries", "exhausted"} counted since the process started (monotonic counters)."""
    return _stats.snapshot()


def get_policy() -> RetryPolicy:
    """The policy storage reads use now."""
    return _policy


def set_policy(policy: RetryPolicy) -> RetryPolicy:
    """Replace the process-wide policy; returns the previous one."""
    global _policy
    previous, _policy = _policy, policy
    return previous


@contextlib.contextmanager
def using(policy: RetryPolicy) -> Iterator[RetryPolicy]:
    """Use `policy` inside a `with` block (process-wide: meant for tests and scripts)."""
    previous = set_policy(policy)
    try:
        yield policy
    finally:
        set_policy(previous)
