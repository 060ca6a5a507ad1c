"""What distinguishes a record: template sentences removed, and the numbers it states.

Instruction data is templated: every record of a task repeats the same instruction
("Extract the product attributes from the description as JSON..."), field labels
("Question:", "Options:") and stock answers ("Yes", "positive"). A sentence embedding of
the whole text is dominated by that shared wording, so two different items of one
template look alike and a reworded copy under another template looks different.
:class:`TemplateStripper` finds the template by document frequency, like the
boilerplate removal of web-text pipelines: a line or sentence that occurs in more than a
small fraction of the records is template, not content, and is dropped before embedding.

Sentence embeddings are also nearly blind to numbers (MiniLM: "John has 3 apples and buys
5 more..." vs "...buys 6 more..." 0.987; two shop listings that differ only in their
price 0.997), so :func:`numbers` extracts the numbers a text states, in a
locale-tolerant canonical form, for an exact check.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Iterable

# Sentence ends: . ! ? followed by space and a capital, digit, quote or bracket.
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")
# A field label at the start of a line ("Question:", "Sentence 1:", "Q:"), split off its value.
_FIELD_LABEL = re.compile(r"^([A-Za-z][\w'-]*(?: [\w'-]+){0,3}:)\s+(?=\S)")
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


def segments(text: str) -> list[str]:
    """Lines, split further into sentences; a field label ('Question:') becomes its own segment."""
    out: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        label = _FIELD_LABEL.match(line)
        if label:
            out.append(label.group(1))
            line = line[label.end():]
        if line:
            out.extend(s for s in _SENTENCE_END.split(line) if s)
    return out


def _key(segment: str) -> str:
    return " ".join(segment.lower().split())


class TemplateStripper:
    """Drops the segments (lines/sentences) that occur in many records of one dataset.

    A segment is template when it occurs in at least ``max(min_records, min_fraction * n)``
    of the ``n`` records it was fitted on. ``min_fraction`` is a fraction of the records
    because a template used by 1 of 300 tasks (T0) covers ~0.3% of them; ``min_records``
    keeps small datasets from losing content that a handful of records share by chance.
    """

    def __init__(self, min_fraction: float = 0.001, min_records: int = 10):
        self.min_fraction = min_fraction
        self.min_records = min_records
        self.cutoff = float("inf")
        self._template: set[str] = set()

    def fit(self, texts: Iterable[str]) -> "TemplateStripper":
        frequency: Counter[str] = Counter()
        n = 0
        for text in texts:
            n += 1
            frequency.update({_key(s) for s in segments(text)})
        self.cutoff = max(float(self.min_records), self.min_fraction * n)
        self._template = {k for k, count in frequency.items() if count >= self.cutoff}
        return self

    @property
    def template_segments(self) -> int:
        return len(self._template)

    def strip(self, text: str) -> str:
        """``text`` without its template segments ('' when it is all template)."""
        parts = segments(text)
        kept = [s for s in parts if _key(s) not in self._template]
        if len(kept) == len(parts):
            return text.strip()  # nothing template: the text as written
        return "\n".join(kept)


def _canonical_number(token: str) -> str:
    """'1,539.00', '1.539,00', '1539' -> '1539'; '61,50' and '61.5' -> '61.5'."""
    if "." in token and "," in token:
        decimal = "." if token.rfind(".") > token.rfind(",") else ","
        token = token.replace("," if decimal == "." else ".", "").replace(decimal, ".")
    elif "." in token or "," in token:
        separator = "." if "." in token else ","
        groups = token.split(separator)
        if len(groups) > 2 or len(groups[-1]) == 3:
            token = "".join(groups)  # thousands separators: 1,539 / 1.539 / 1,000,000
        else:
            token = f"{groups[0]}.{groups[1]}"
    value = float(token)
    return repr(int(value)) if value.is_integer() else repr(round(value, 6))


def numbers(text: str) -> frozenset[str]:
    """The distinct numbers stated in ``text``, canonical ('US$156.00' and '156 USD' agree)."""
    return frozenset(_canonical_number(t) for t in _NUMBER.findall(text))
