"""A minimal text progress bar for the meta-trainer, written to a stream (stderr by default).

It redraws one line with ``\\r``: a bar, ``step/total``, the latest meta-loss, the speed in
outer steps per second and the time left. It draws nothing when disabled, and by default it
is disabled when the stream is not a terminal (logs and CI stay clean).
"""

from __future__ import annotations

import math
import sys
import time
from typing import TextIO

_WIDTH = 24


def _format_seconds(seconds: float) -> str:
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}:{minutes:02d}:{seconds:02d}"
    return f"{minutes}:{seconds:02d}"


class ProgressBar:
    """One-line progress bar: ``meta-train  40% |#####    | 120/300 meta_loss 0.41 ...``.

    Args:
      total: the outer step the run ends at.
      enabled: ``None`` draws only when ``stream`` is a terminal; ``True`` always draws;
        ``False`` never draws.
      stream: where to draw; ``sys.stderr`` when None.
      min_interval: minimum seconds between redraws (the last step is always drawn).
    """

    def __init__(
        self,
        total: int,
        enabled: bool | None = None,
        stream: TextIO | None = None,
        min_interval: float = 0.1,
    ) -> None:
        self._stream = sys.stderr if stream is None else stream
        if enabled is None:
            isatty = getattr(self._stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self._total = max(int(total), 0)
        self._min_interval = min_interval
        self._first: tuple[float, int] | None = None  # (time, step) of the first update
        self._last_draw = -math.inf
        self._drawn = False

    def update(self, step: int, meta_loss: float | None = None) -> None:
        """Redraws the bar at outer step ``step`` with the latest ``meta_loss``."""
        if not self.enabled:
            return
        now = time.monotonic()
        if self._first is None:
            # Timing starts at the first finished step, so compilation does not count.
            self._first = (now, step)
        if step < self._total and now - self._last_draw < self._min_interval:
            return
        self._last_draw = now
        fraction = 1.0 if self._total == 0 else min(step / self._total, 1.0)
        filled = int(round(fraction * _WIDTH))
        bar = "#" * filled + " " * (_WIDTH - filled)
        done = step - self._first[1]
        elapsed = now - self._first[0]
        rate = done / elapsed if elapsed > 0 and done > 0 else 0.0
        eta = (self._total - step) / rate if rate > 0 else math.inf
        loss = "" if meta_loss is None else f" meta_loss {meta_loss:.4g}"
        line = (
            f"\rmeta-train {100 * fraction:3.0f}% |{bar}| {step}/{self._total}{loss}"
            f" {rate:.2f} step/s ETA {_format_seconds(eta)}"
        )
        self._stream.write(line)
        self._stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Ends the line the bar was drawn on."""
        if self.enabled and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = False
