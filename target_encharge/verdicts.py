"""What an answer means for the records a request carried: :class:`Verdict`.

:func:`~target_encharge.request.verdict` reads each outcome into one; a template says what a status means for it
beyond that (a 404 to a tag: its person is not there yet; a 409 to a custom object's create: it exists), in its
``answers``.
"""

from __future__ import annotations

import enum
import types
import typing as t

NOT_FOUND, CONFLICT = 404, 409


class Verdict(enum.Enum):
    """What an outcome means for the records it carried."""

    DELIVERED = "delivered"  # 2xx: the records are done
    DRY_RUN = "dry run"  # not sent: done as far as this run goes
    RETRY = "retry"  # 408, 429, 5xx, a timeout or a dropped connection: worth another try
    REFUSED = "refused"  # any other answer: the records (or some of a batch) fail
    FAILED = "failed"  # no answer, and none would come of trying again (the request could not be made)
    AUTH_FAILURE = "auth failure"  # 401/403 on one of our keys: every further call would fail the same way
    # refusals a template (or a lookup) gives a meaning of its own, in its `answers`:
    LATER = "not there yet"  # what it names may come later in the run (a tag's person): tried again at the end
    ABSENT = "not there"  # what it names is not there (a removal: already gone, done; a lookup: there is none)
    EXISTS = "exists"  # a create of what exists: sent again as an update

    @property
    def refused(self) -> bool:
        """Encharge answered and refused the records as they were sent (whatever it means for them)."""
        return self in REFUSALS


REFUSALS = frozenset((Verdict.REFUSED, Verdict.LATER, Verdict.ABSENT, Verdict.EXISTS))
NO_ANSWERS: t.Mapping[int, Verdict] = types.MappingProxyType({})  # no status means more than verdict() reads
