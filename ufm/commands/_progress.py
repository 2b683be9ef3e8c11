"""Progress of a long command on stderr: a status line that moves on a terminal, plain lines otherwise.

On a terminal the last line is rewritten a few times a second — elapsed time, a bar of the
units done, and what runs now with its own elapsed time — so it moves even while numba
compiles for a minute inside one call. Messages (results as they arrive) are printed as
ordinary lines above it. When stderr is not a terminal (a log file, CI) every message is a
timestamped line, and a stage that runs longer than ``heartbeat`` seconds gets a "still
running" line every ``heartbeat`` seconds, so a log never goes quiet for minutes.

No dependency: a single status line needs neither tqdm nor rich, and works the same on every
install.
"""

from __future__ import annotations

import sys
import threading
import time

__all__ = ["Progress"]


class Progress:
    """A progress display for :func:`ufm.experiments.structure_before_collapse.run` (and any job
    that reports a message per result, ``stage(text)`` before a unit of work and ``advance()``
    after it).

    Arguments:
        stream: where to write (default stderr).
        interactive: rewrite a status line (default: whether ``stream`` is a terminal).
        heartbeat: seconds between "still running" lines when not interactive.
        refresh: seconds between redraws of the status line.
    """

    def __init__(self, stream=None, *, interactive: bool | None = None, heartbeat: float = 15.0,
                 refresh: float = 0.25):
        self.stream = stream or sys.stderr
        if interactive is None:
            isatty = getattr(self.stream, "isatty", None)
            interactive = bool(isatty and isatty())
        self.interactive = interactive
        self.heartbeat, self.refresh = heartbeat, refresh
        self.started = self._stage_started = self._last_output = time.perf_counter()
        self.total, self.done, self.current = None, 0, ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._tick, name="ufm-progress", daemon=True)
        self._thread.start()

    # -- the job's calls ------------------------------------------------------------------------
    def __call__(self, msg: str) -> None:
        with self._lock:
            self._clear()
            self._write(f"[{self._elapsed():7.1f} s] {msg}\n")
            self._draw()

    def set_total(self, n: int) -> None:
        with self._lock:
            self.total = int(n)

    def stage(self, text: str) -> None:
        with self._lock:
            self.current = text
            self._stage_started = self._last_output = time.perf_counter()
            self._clear()
            self._draw()

    def advance(self, n: int = 1) -> None:
        with self._lock:
            self.done += n
            self._clear()
            self._draw()

    def close(self) -> None:
        """Stop the ticker and remove the status line."""
        self._stop.set()
        self._thread.join(timeout=2)
        with self._lock:
            self._clear()
            self.current = ""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- drawing --------------------------------------------------------------------------------
    def _elapsed(self) -> float:
        return time.perf_counter() - self.started

    def _write(self, text: str) -> None:
        self.stream.write(text)
        self.stream.flush()
        self._last_output = time.perf_counter()

    def status(self) -> str:
        """The status line: elapsed time, units done of the total, the current stage and its time."""
        parts = [f"[{self._elapsed():7.1f} s]"]
        if self.total:
            width = 20
            filled = min(width, int(width * self.done / self.total))
            parts.append(f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total}")
        if self.current:
            parts.append(f"{self.current} ({time.perf_counter() - self._stage_started:.0f} s)")
        return " ".join(parts)

    def _clear(self) -> None:
        if self.interactive:
            self.stream.write("\r\x1b[K")

    def _draw(self) -> None:
        if self.interactive and not self._stop.is_set():
            self.stream.write(self.status()[:200])
            self.stream.flush()

    def _tick(self) -> None:
        while not self._stop.wait(self.refresh):
            with self._lock:
                if self.interactive:
                    self._clear()
                    self._draw()
                elif self.current and time.perf_counter() - self._last_output >= self.heartbeat:
                    self._write(f"[{self._elapsed():7.1f} s] … still running: {self.current} "
                                f"({time.perf_counter() - self._stage_started:.0f} s so far)\n")
