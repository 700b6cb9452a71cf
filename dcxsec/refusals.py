"""Refused connections, for the operator's log and the application's audit.

Every refusal is a ``Refusal``.  ``RefusalReporter`` writes one WARNING line
per refusal on the ``dcxsec.server`` logger, without a traceback; under a
flood, only the first few of each interval get a line of their own, and the
interval ends with one line that counts them all by reason.  The
application's hook sees every refusal, logged or counted.
"""
from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Callable, Optional

log = logging.getLogger("dcxsec.server")

SUMMARY_INTERVAL = 5.0  # seconds between summary lines under a flood
LINES_PER_INTERVAL = 10  # refusals logged one by one in each interval


@dataclass(frozen=True)
class Refusal:
    """A connection the server refused before it became an association.

    ``stage`` is where it was refused: ``"limit"`` (over a limit on pending
    handshakes), ``"handshake"`` (no TLS handshake: nothing sent, too slow,
    not TLS, ...), ``"verification"`` (the peer's certificate was refused)
    or ``"binding"`` (its AE title is not bound to its certificate).
    ``reason`` is the whole reason for a person, ``kind`` the same in a few
    words, which alike refusals share.  ``subject`` and ``thumbprint``
    (SHA-1, upper-case hex) describe the peer's certificate when it
    presented one; ``time`` is seconds since the epoch.  Enough for an IHE
    ATNA "Security Alert" (node authentication failure) audit record.
    """

    address: str
    port: int
    stage: str
    reason: str
    subject: Optional[str]
    thumbprint: Optional[str]
    time: float
    kind: str = ""

    def peer(self) -> str:
        """"host:port", or "[v6]:port"."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}"


RefusalHook = Callable[[Refusal], object]


class RefusalReporter:
    """Logs refusals readably under any load and hands each to a hook."""

    def __init__(self, hook: RefusalHook | None = None, *, interval: float = SUMMARY_INTERVAL,
                 lines_per_interval: int = LINES_PER_INTERVAL) -> None:
        self.hook = hook
        self.interval = interval
        self.lines_per_interval = lines_per_interval
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._counts: Counter[str] = Counter()
        self._logged = 0
        self._dropped = 0
        self._hook_failed = False

    def report(self, refusal: Refusal, *, log_it: bool = True) -> None:
        """Count and (unless the interval's lines are spent) log a refusal,
        then hand it to the hook.  ``log_it`` False: already logged elsewhere."""
        with self._lock:
            self._roll(time.monotonic())
            self._counts[refusal.kind or refusal.stage] += 1
            line = log_it and self._logged < self.lines_per_interval
            if line:
                self._logged += 1
        if line:
            log.warning("connection from %s refused (%s): %s", refusal.peer(), refusal.stage,
                        refusal.reason)
        self._call_hook(refusal)

    def dropped(self, count: int) -> None:
        """Refusals the engine could not keep because none were taken meanwhile."""
        with self._lock:
            self._dropped += count

    def flush(self) -> None:
        """End the interval if its time is up: the summary line, when some
        refusals had no line of their own."""
        with self._lock:
            self._roll(time.monotonic())

    def _roll(self, now: float) -> None:
        # Lock held.
        if now - self._started < self.interval:
            return
        total = sum(self._counts.values())
        if total > self._logged or self._dropped:
            parts = ", ".join(f"{n} {kind}" for kind, n in self._counts.most_common())
            extra = f"; {self._dropped} more not recorded" if self._dropped else ""
            log.warning("refused %d connections in the last %.0f s: %s%s", total,
                        now - self._started, parts, extra)
        self._started = now
        self._counts.clear()
        self._logged = 0
        self._dropped = 0

    def _call_hook(self, refusal: Refusal) -> None:
        if self.hook is None:
            return
        try:
            self.hook(refusal)
        except Exception as exc:  # noqa: BLE001 - the server must go on serving
            if not self._hook_failed:  # once: a broken hook must not flood the log
                self._hook_failed = True
                log.error("the on_refusal hook failed: %s: %s (later failures are not logged)",
                          type(exc).__name__, exc)
