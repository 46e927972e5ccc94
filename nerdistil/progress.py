"""Progress where tqdm draws no bar: one log line a minute, with an ETA from the rate so far.

tqdm's bars belong on a terminal. In a log file every refresh stays in the file, and the first refresh, made after
one slow warm-up item, estimates hours for a job of seconds (issue 28 saw ``1/1915 [00:02<1:17:03]`` and 34-hour
ETAs in a first run's log). So long loops draw tqdm's bar only on a terminal (``disable=None``) and, where it is
off, log through ``Heartbeat``: nothing for the first minute, then a line a minute whose ETA averages every item
since the start.
"""

from __future__ import annotations

import logging
import math
import time

log = logging.getLogger(__name__)


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "unknown"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    return f"{minutes} min {seconds:02d} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60:02d} min"


class Heartbeat:
    """Log ``WHAT: done/total UNIT[, extra], about T left`` at most once every ``every_s`` seconds.

    ``on`` is False where a tqdm bar is drawn instead (a terminal) or on a process that should stay quiet;
    ``done`` is where the loop starts (a resumed loop's rate counts only the items it did itself); ``share``:
    processes splitting the items evenly, each doing 1/share of what is left.
    """

    def __init__(self, what: str, total: int, unit: str, done: int = 0, on: bool = True, every_s: float = 60.0,
                 share: int = 1) -> None:  # fmt: skip
        self.what, self.total, self.unit, self.start, self.on, self.every_s = what, total, unit, done, on, every_s
        self.share = max(1, share)
        self.t0 = self.last = time.perf_counter()

    def skip(self, n: int) -> None:
        """``n`` items were done without work (reused after an interruption): they do not speed up the ETA."""
        self.start += n

    def tick(self, done: int, extra: str = "") -> bool:
        """Log a line if ``every_s`` passed since the last one; returns whether it logged."""
        now = time.perf_counter()
        if not self.on or now - self.last < self.every_s:
            return False
        self.last = now
        rate = (done - self.start) / (now - self.t0) if now > self.t0 else 0.0
        left = (self.total - done) / self.share / rate if rate > 0 else float("nan")
        log.info("%s: %d/%d %s%s, about %s left", self.what, done, self.total, self.unit,
                 f", {extra}" if extra else "", _duration(left))  # fmt: skip
        return True
