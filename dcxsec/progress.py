"""Progress of a transfer: a bar on a terminal (tqdm), plain lines elsewhere."""
from __future__ import annotations

import sys
import threading
import time
from typing import Any

PLAIN_EVERY = 5.0  # seconds between plain progress lines


class Progress:
    """Objects and bytes done of a known total, with the rate; thread-safe."""

    def __init__(self, objects: int, total_bytes: int, *, quiet: bool = False,
                 label: str = "send", stream: Any = None) -> None:
        self.objects, self.total_bytes, self.label = objects, total_bytes, label
        self.stream = stream or sys.stderr
        self.done = self.done_bytes = 0
        self.said = -1  # objects done at the last plain line
        self.start = self.last_line = time.monotonic()
        self.lock = threading.Lock()
        self.bar = None
        self.quiet = quiet
        if not quiet and getattr(self.stream, "isatty", lambda: False)():
            from tqdm import tqdm

            self.bar = tqdm(total=objects, unit="obj", desc=label, file=self.stream,
                            dynamic_ncols=True)

    def _rate(self) -> float:
        elapsed = time.monotonic() - self.start
        return self.done_bytes / elapsed / 1e6 if elapsed > 0 else 0.0

    def advance(self, nbytes: int) -> None:
        """One object more, of ``nbytes``."""
        with self.lock:
            self.done += 1
            self.done_bytes += nbytes
            if self.bar is not None:
                self.bar.set_postfix_str(f"{self.done_bytes / 1e6:.1f} MB, {self._rate():.1f} MB/s",
                                         refresh=False)
                self.bar.update(1)
            elif not self.quiet and time.monotonic() - self.last_line >= PLAIN_EVERY:
                self.last_line = time.monotonic()
                self._line()

    def _line(self) -> None:
        self.said = self.done
        print(f"{self.label}: {self.done}/{self.objects} objects, {self.done_bytes / 1e6:.1f} of "
              f"{self.total_bytes / 1e6:.1f} MB, {self._rate():.1f} MB/s", file=self.stream,
              flush=True)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
        elif not self.quiet and self.done != self.said:
            self._line()
