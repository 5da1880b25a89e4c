"""Ctrl-C during training: stop at once while the weights are untouched (rollout, reference
scoring, validation); during an update, finish the step first and save. A second Ctrl-C
always stops at once.

    with Interrupts(say) as intr:
        intr.phase = "update"
        ...
        if intr.requested:      # Ctrl-C arrived during the update
            save(); raise KeyboardInterrupt
"""

from __future__ import annotations

import signal
import threading


class Interrupts:
    """The Ctrl-C policy above, as a context manager around the training loop."""

    def __init__(self, say):
        self.phase = "idle"
        self.requested = False
        self._say = say
        self._previous = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
        return self

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        return False

    def _handler(self, signum, frame):
        if self.phase != "update" or self.requested:
            raise KeyboardInterrupt
        self.requested = True
        self._say("interrupt: finishing this step's update, then saving a checkpoint "
                  "(Ctrl-C again to quit without saving)")


__all__ = ["Interrupts"]
