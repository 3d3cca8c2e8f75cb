"""Emails that differ only in case are one person in Encharge: a run that meets several spellings of one email
merges their records into that person (later fields overwrite earlier ones). Said once per run, with a count and
an example, so it is never silent."""

from __future__ import annotations

MAX_EMAILS = 50_000  # distinct emails compared per run: memory stays flat however many records come


class CaseMerges:
    """How many records were merged because of case alone, from the first spelling of each of the run's first
    ``MAX_EMAILS`` distinct emails (known by the hash of the email lower-cased)."""

    def __init__(self) -> None:
        self._first: dict[int, str] = {}  # hash of the email lower-cased -> its first spelling
        self.merged = 0
        self.example: tuple[str, str] | None = None  # an earlier spelling and one merged into it

    def saw(self, email: object) -> None:
        """A record for ``email`` (anything not text is ignored). From the reading thread only: no lock."""
        if not isinstance(email, str):
            return
        folded = hash(email.lower())
        first = self._first.get(folded)
        if first is None:
            if len(self._first) < MAX_EMAILS:
                self._first[folded] = email
        elif first != email:
            self.merged += 1
            self.example = self.example or (first, email)

    def warning(self) -> str | None:
        """The run's one warning, if any record was merged by case."""
        if not self.merged or self.example is None:
            return None
        first, other = self.example
        return (
            f"{self.merged:,} record(s) had an email differing only in case from an earlier one (e.g. {first!r} "
            f"and {other!r}): Encharge treats them as one person, so their fields were merged (later ones win)"
        )
