"""Near-miss suggestions for every finding and error (a leaf module: imports nothing of ours)."""

from __future__ import annotations

from collections.abc import Iterable


def suggest(word: str, choices: Iterable[str]) -> str | None:
    """The nearest of ``choices`` to ``word``, or None when nothing is close."""
    import difflib  # only when something is wrong: not on every start (about 1.5 ms)

    matches = difflib.get_close_matches(word, sorted(choices), n=1, cutoff=0.6)
    return matches[0] if matches else None


def did_you_mean(word: str, choices: Iterable[str]) -> str | None:
    """``did you mean 'X'?`` for the nearest choice, or None."""
    best = suggest(word, choices)
    return f"did you mean '{best}'?" if best else None
