"""The watchdog thread behind every engine's timeout."""

import threading
import time

from reportupdater.deadlines import Watchdog


def test_an_earlier_deadline_added_later_fires_first_and_cancelled_ones_never():
    watchdog = Watchdog()
    fired: list[str] = []
    done = threading.Event()
    watchdog.call_after(60, lambda: fired.append("late"))
    cancel = watchdog.call_after(0.05, lambda: fired.append("cancelled"))
    watchdog.call_after(0.2, lambda: (fired.append("early"), done.set()))
    cancel()
    assert done.wait(5), "the watchdog slept through an earlier deadline"
    time.sleep(0.1)
    assert fired == ["early"]


def test_a_failing_action_does_not_stop_later_ones():
    watchdog = Watchdog()
    done = threading.Event()

    def broken() -> None:
        raise OSError("gone")
    watchdog.call_after(0.01, broken)
    watchdog.call_after(0.05, done.set)
    assert done.wait(5)
