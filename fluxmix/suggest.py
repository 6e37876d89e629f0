"""'Did you mean' suggestions in bounded time, however many names and misspellings there are.

`difflib.get_close_matches` compares the word with every candidate; validation asks once per bad
reference, so 600 wires to undefined gears in a 10,000-gear scenario cost six million sequence
comparisons (minutes). A `Suggester` over a large set takes a word's neighbours in prefix order and
in suffix order (a typo rarely touches both ends of a name), keeps the `RANKED` that share the most
leading and trailing characters with it, compares only those, and remembers each answer. Small sets
are scanned whole, exactly as difflib would. A Suggester also has a budget of comparisons (one
costs up to ~0.1 ms for two 60-character names): once spent, after a thousand or so distinct
misspellings, it stops suggesting, so the cost stays bounded for any document; every problem is
still reported, only without its hint.
"""

from __future__ import annotations

import difflib
from bisect import bisect_left
from collections.abc import Iterable

CUTOFF = 0.6  # difflib's default similarity for a "close" match
NEIGHBOURS = 4  # names taken on each side of the word, in prefix order and in suffix order
RANKED = 3  # of those, how many (sharing the most leading + trailing characters) are compared
FULL_SCAN = 16  # sets up to this size are compared whole, as difflib would
BUDGET = 3_000  # comparisons one Suggester makes at most


class Suggester:
    """The closest name to a word among a fixed set, or None when nothing is close (or the budget is spent)."""

    def __init__(self, names: Iterable[object], *, budget: int = BUDGET) -> None:
        self._names = sorted({n for n in names if isinstance(n, str)})
        self._reversed = sorted(n[::-1] for n in self._names) if len(self._names) > FULL_SCAN else []
        self._answers: dict[str, str | None] = {}
        self.budget = budget

    def candidates(self, word: str) -> list[str]:
        """The names `word` is compared with: all of a small set, else the RANKED of its neighbours
        in both orders that share the most leading and trailing characters with it."""
        if not self._reversed:
            return self._names
        at = bisect_left(self._names, word)
        pool = set(self._names[max(0, at - NEIGHBOURS) : at + NEIGHBOURS])
        backwards = word[::-1]
        at = bisect_left(self._reversed, backwards)
        pool.update(n[::-1] for n in self._reversed[max(0, at - NEIGHBOURS) : at + NEIGHBOURS])
        ranked = sorted(pool, key=lambda name: (-_shared_ends(word, name), name))
        return sorted(ranked[:RANKED])

    def closest(self, word: object) -> str | None:
        if not isinstance(word, str):
            return None
        if word not in self._answers:
            pool = self.candidates(word)
            if len(pool) > self.budget:
                return None  # not remembered: the budget is what ran out, not the match
            self.budget -= len(pool)
            matches = difflib.get_close_matches(word, pool, n=1, cutoff=CUTOFF)
            self._answers[word] = matches[0] if matches else None
        return self._answers[word]

    def hint(self, word: object) -> str:
        """`; did you mean 'sink'?` for a near miss, else an empty string."""
        match = self.closest(word)
        return f"; did you mean {match!r}?" if match is not None else ""


def _shared_ends(a: str, b: str) -> int:
    """How many leading plus trailing characters `a` and `b` have in common."""
    lead = 0
    for x, y in zip(a, b):
        if x != y:
            break
        lead += 1
    trail = 0
    for x, y in zip(reversed(a[lead:]), reversed(b[lead:])):
        if x != y:
            break
        trail += 1
    return lead + trail


def did_you_mean(word: object, candidates: Iterable[str]) -> str:
    """`; did you mean 'sink'?` for a near miss, else an empty string (one-off: callers asking
    many times over one large set keep a Suggester instead)."""
    if not isinstance(word, str):
        return ""
    return Suggester(candidates).hint(word)


__all__ = ["BUDGET", "CUTOFF", "FULL_SCAN", "NEIGHBOURS", "RANKED", "Suggester", "did_you_mean"]
