"""'Did you mean' suggestions in bounded time, however many names there are to choose from.

`difflib.get_close_matches` compares the word with every candidate; validation asks once per bad
reference, so 600 wires to undefined gears in a 10,000-gear scenario cost six million sequence
comparisons (minutes). A `Suggester` over a large set compares a word only with its neighbours in
prefix order and in suffix order (a typo rarely touches both ends of a name), at most
`2 * NEIGHBOURS` in each order, and remembers each answer. Small sets are scanned whole, exactly
as difflib would.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections.abc import Iterable

CUTOFF = 0.6  # difflib's default similarity for a "close" match
FULL_SCAN = 128  # sets up to this size are compared whole
NEIGHBOURS = 32  # names taken on each side of the word, in prefix order and in suffix order


class Suggester:
    """The closest name to a word among a fixed set, or None when nothing is close."""

    def __init__(self, names: Iterable[object]) -> None:
        self._names = sorted({n for n in names if isinstance(n, str)})
        self._reversed = sorted(n[::-1] for n in self._names) if len(self._names) > FULL_SCAN else []
        self._answers: dict[str, str | None] = {}

    def candidates(self, word: str) -> list[str]:
        """The names `word` is compared with: all of a small set, else its neighbours in both orders."""
        if not self._reversed:
            return self._names
        at = bisect_left(self._names, word)
        pool = set(self._names[max(0, at - NEIGHBOURS) : at + NEIGHBOURS])
        backwards = word[::-1]
        at = bisect_left(self._reversed, backwards)
        pool.update(n[::-1] for n in self._reversed[max(0, at - NEIGHBOURS) : at + NEIGHBOURS])
        return sorted(pool)

    def closest(self, word: object) -> str | None:
        if not isinstance(word, str):
            return None
        if word not in self._answers:
            matches = difflib.get_close_matches(word, self.candidates(word), n=1, cutoff=CUTOFF)
            self._answers[word] = matches[0] if matches else None
        return self._answers[word]

    def hint(self, word: object) -> str:
        """`; did you mean 'sink'?` for a near miss, else an empty string."""
        match = self.closest(word)
        return f"; did you mean {match!r}?" if match is not None else ""


def did_you_mean(word: object, candidates: Iterable[str]) -> str:
    """`; did you mean 'sink'?` for a near miss, else an empty string (one-off: callers asking
    many times over one large set keep a Suggester instead)."""
    if not isinstance(word, str):
        return ""
    return Suggester(candidates).hint(word)


__all__ = ["CUTOFF", "FULL_SCAN", "NEIGHBOURS", "Suggester", "did_you_mean"]
