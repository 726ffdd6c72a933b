# Stage 3 of 5: execution. Timeouts for every engine and every command
# (processes.py).
#
# One watchdog thread for the whole process calls an action (kill a script's
# process group, interrupt a query) when its deadline passes. A thread per
# query or script would cost a thread start and a context switch for every
# interval, which is most of the runner's overhead on short scripts. Touches
# nothing itself: the actions do.

from __future__ import annotations

import heapq
import itertools
import logging
import math
import signal
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)


class Watchdog:
    """Calls actions at their deadlines from one daemon thread, started on
    first use. Cancelled entries are dropped from the front of the queue as
    soon as they reach it, so a long run of equal timeouts keeps it short."""

    def __init__(self) -> None:
        self._condition = threading.Condition()
        self._queue: list[tuple[float, int]] = []  # (deadline, key), a heap
        self._actions: dict[int, Callable[[], None]] = {}
        self._keys = itertools.count()
        self._thread: threading.Thread | None = None
        # When the thread looks at the queue next: a new entry due later needs
        # no wake-up (a context switch per short command otherwise).
        self._wake_at = math.inf

    def call_after(self, seconds: float, action: Callable[[], None]) -> Callable[[], None]:
        """Call `action` in `seconds` unless the returned cancel() comes first."""
        deadline = time.monotonic() + seconds
        key = next(self._keys)
        with self._condition:
            self._actions[key] = action
            heapq.heappush(self._queue, (deadline, key))
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._watch, name="reportupdater-watchdog",
                                                daemon=True)
                self._thread.start()
            elif deadline < self._wake_at:
                self._wake_at = deadline
                self._condition.notify()

        def cancel() -> None:
            with self._condition:
                self._actions.pop(key, None)
                self._drop_cancelled()
        return cancel

    def _drop_cancelled(self) -> None:
        while self._queue and self._queue[0][1] not in self._actions:
            heapq.heappop(self._queue)

    def _watch(self) -> None:
        _leave_signals_to_main_thread()
        while True:
            with self._condition:
                self._drop_cancelled()
                if not self._queue:
                    self._wake_at = math.inf
                    self._condition.wait()
                    continue
                deadline, key = self._queue[0]
                delay = deadline - time.monotonic()
                if delay > 0:
                    self._wake_at = deadline
                    self._condition.wait(delay)
                    continue
                heapq.heappop(self._queue)
                action = self._actions.pop(key)
                self._wake_at = -math.inf  # looks again right after the action
            try:
                action()
            except Exception as exc:  # one failed kill must not stop later timeouts
                log.warning("timeout action failed: %s", exc)


def _leave_signals_to_main_thread() -> None:
    """Block SIGINT and SIGTERM in the watchdog thread. The kernel hands a
    signal to any thread that does not block it, and Python runs the handler
    only when the main thread wakes up: with --jobs 1 the main thread waits
    for a script in poll(), which only a signal sent to it interrupts.
    (Nothing is started from this thread: a child would inherit the mask.)"""
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})


watchdog = Watchdog()
