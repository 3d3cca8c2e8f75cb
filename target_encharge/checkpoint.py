"""The run's checkpoint: :class:`StateGate` lets a tap's STATE out once every record before it is done.

A record is done when Encharge answered 2xx for it or it failed for good (and went to the dead-letter file).
Thread-safe: workers settle records while the reader numbers new ones.
"""

from __future__ import annotations

import collections
import threading
import typing as t


class StateGate:
    """Numbers records as they arrive, and lets each STATE out, in order, once every record before it is done."""

    def __init__(self, release: t.Callable[[dict], None]) -> None:
        self.release = release  # called (under the gate's lock) with each STATE whose records are all done
        self._lock = threading.RLock()
        self._next_seq = 0
        self._done_below = 0  # every record numbered below this is done
        self._done_ahead: set[int] = set()
        self._states: collections.deque[tuple[int, dict]] = collections.deque()
        self._last_state: dict | None = None
        self._last_released: dict | None = None

    def number(self) -> int:
        """The next record's place in the input. Called from the reading thread only (as add_state is), so
        without the lock: the other threads only read how far numbering went."""
        seq = self._next_seq
        self._next_seq = seq + 1
        return seq

    def add_state(self, state: dict) -> None:
        """A STATE from the tap: it waits for every record that came before it (a repeat of the last is ignored).
        A STATE waiting for the same records as the one before it replaces it: only the latest is kept, so a
        backlog of STATEs behind one slow call holds one STATE, not all of them."""
        with self._lock:
            if self._last_state == state:
                return
            self._last_state = state
            if self._states and self._states[-1][0] == self._next_seq:
                self._states[-1] = (self._next_seq, state)
            else:
                self._states.append((self._next_seq, state))
            self._release_states()

    def done(self, *seqs: int) -> None:
        """These records are done; every STATE they held back goes out."""
        with self._lock:
            for seq in seqs:
                if seq == self._done_below:
                    self._done_below += 1
                    while self._done_below in self._done_ahead:
                        self._done_ahead.discard(self._done_below)
                        self._done_below += 1
                else:
                    self._done_ahead.add(seq)
            self._release_states()

    def release_again(self) -> None:
        """The last STATE let out, once more (the end of a run re-sends it with the final counts), unless a
        later STATE is still held back."""
        with self._lock:
            if self._last_released is not None and not self._states:
                self.release(self._last_released)

    @property
    def pending(self) -> int:
        """Records numbered but not done."""
        with self._lock:
            return self._next_seq - self._done_below

    def _release_states(self) -> None:
        while self._states and self._states[0][0] <= self._done_below:
            self._last_released = self._states.popleft()[1]
            self.release(self._last_released)
