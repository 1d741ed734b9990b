"""Document quality heuristics in the Gopher / C4 family, each a small pure function of the text.

``quality_reason`` applies the thresholds of a manifest's ``filters:`` section in a fixed order and
returns the first failure as a drop reason (``too_many_words``, ``mean_word_length_low``,
``mean_word_length_high``, ``symbol_ratio``, ``alpha_ratio``, ``repeated_lines``), or None to keep.
A threshold set to ``None`` is not checked. Words are whitespace-separated tokens, as in
``min_words`` and word chunking.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from massiveds.core.manifest import Filters

#: Gopher's symbols: hash marks and ellipses, the signature of tag lists, tweets and boilerplate. A
#: run counts once, so a ``#####`` comment banner in code is one symbol, not a page of them.
SYMBOLS = re.compile(r"#+|\.{3,}|…+")


def mean_word_length(words: Sequence[str]) -> float:
    """Mean number of characters per word (0 for no words)."""
    return sum(len(w) for w in words) / len(words) if words else 0.0


def symbol_ratio(text: str, n_words: int) -> float:
    """Runs of ``#``, ``...`` and ``…`` per word (Gopher's symbol-to-word ratio)."""
    if n_words == 0:
        return 0.0
    return sum(1 for _ in SYMBOLS.finditer(text)) / n_words


def alpha_ratio(words: Sequence[str]) -> float:
    """Fraction of words with at least one alphabetic character (Gopher keeps >= 0.8 for web prose)."""
    if not words:
        return 0.0
    return sum(1 for w in words if any(c.isalpha() for c in w)) / len(words)


def repeated_line_fraction(text: str) -> float:
    """Fraction of the characters of non-blank lines that sit in a line already seen earlier in the document."""
    seen: set[str] = set()
    total = repeated = 0
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        total += len(line)
        if line in seen:
            repeated += len(line)
        else:
            seen.add(line)
    return repeated / total if total else 0.0


def quality_reason(text: str, words: Sequence[str], filters: Filters) -> str | None:
    """The first quality filter ``text`` fails (a drop reason), or None; ``words`` is ``text.split()``."""
    n = len(words)
    if filters.max_words is not None and n > filters.max_words:
        return "too_many_words"
    if filters.min_mean_word_length is not None or filters.max_mean_word_length is not None:
        mean = mean_word_length(words)
        if filters.min_mean_word_length is not None and mean < filters.min_mean_word_length:
            return "mean_word_length_low"
        if filters.max_mean_word_length is not None and mean > filters.max_mean_word_length:
            return "mean_word_length_high"
    if filters.max_symbol_ratio is not None and symbol_ratio(text, n) > filters.max_symbol_ratio:
        return "symbol_ratio"
    if filters.min_alpha_ratio is not None and alpha_ratio(words) < filters.min_alpha_ratio:
        return "alpha_ratio"
    if filters.max_repeated_line_fraction is not None and repeated_line_fraction(text) > filters.max_repeated_line_fraction:
        return "repeated_lines"
    return None
