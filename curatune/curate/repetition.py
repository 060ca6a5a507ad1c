"""Repetition that means degenerate output, not templated writing.

Gopher's repetition thresholds were tuned on web documents; on chat answers they flag
lists, install guides ("by running the following command" five times), lyrics and code.
A degenerate answer looks different: the model *loops*. This module finds three shapes
of it, all on the prose of the answer (code blocks and tables are left out: code repeats
lines and identifiers by nature):

* a **loop**: a short unit of words said again and again back to back
  ("buy now buy now buy now ...", "I love you. I love you. I love you. ...");
* a **repeated block**: a long run of words (a paragraph, a list) said twice in a row;
* **repeated lines**: the same line (outside code and tables) again and again, back to back.

A numbered list, a step-by-step guide or a weekly plan repeats words and even whole lines,
but not back to back, so none of the three fires on it.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from curatune.curate.prose import prose_lines

#: Numbers and words (underscores are not words: blanks "\\_\\_\\_" in forms repeat by design);
#: numbers and single letters tell templated lines apart ("country A ... country B ...").
_WORD = re.compile(r"\d+(?:[.,]\d+)*|[^\W\d_]+(?:'[^\W\d_]+)?")
#: A piece of up to this many characters repeated back to back...
_CHAR_LOOP_UNIT = 8
#: ...this many times is a character loop ("\\_" 20,000 times, "Ha" 600 times).
_CHAR_LOOP_REPEATS = 500


@dataclass(frozen=True)
class RepetitionFinding:
    """What repeats: a description for the ledger and the exact repeated text (the span)."""

    detail: str
    span: str


@dataclass(frozen=True)
class RepetitionLimits:
    min_loop_repeats: int = 4
    min_loop_words: int = 30
    max_loop_unit: int = 60
    min_block_words: int = 40
    min_line_repeats: int = 5
    min_line_words: int = 2


def back_to_back_runs(ids: np.ndarray) -> list[tuple[int, int, int]]:
    """Stretches where the text repeats itself with a fixed lag: (unit k, first word, words covered).

    For every word trigram the lag to its previous occurrence is computed (vectorized: a
    stable sort groups equal trigrams). Inside a loop of a k-word unit every trigram was
    last seen exactly k words earlier, so a loop is a run of positions with the same lag k;
    the smallest period is found because the *last* occurrence is used.
    """
    n = len(ids)
    if n < 4:
        return []
    keys = (ids[:-2] * np.int64(1_000_003) + ids[1:-1]) * np.int64(1_000_033) + ids[2:]
    order = np.argsort(keys, kind="stable")
    lag = np.zeros(len(keys), dtype=np.int64)
    same = keys[order][1:] == keys[order][:-1]
    lag[order[1:][same]] = order[1:][same] - order[:-1][same]
    steady = (lag[1:] == lag[:-1]) & (lag[1:] > 0)
    if not steady.any():
        return []
    edges = np.diff(np.concatenate(([0], steady.astype(np.int8), [0])))
    starts = np.flatnonzero(edges == 1)
    ends = np.flatnonzero(edges == -1)  # run of equal lags covers positions starts..ends (inclusive)
    out = []
    for s, e in zip(starts.tolist(), ends.tolist()):
        k = int(lag[s])
        first = s - k
        covered = (e - s + 1) + k + 2  # trigram positions s..e repeat those k earlier
        out.append((k, first, covered))
    return out


def character_loop(text: str) -> RepetitionFinding | None:
    """A unit of 1-8 characters repeated back to back hundreds of times (vectorized per unit length)."""
    if len(text) < _CHAR_LOOP_REPEATS:
        return None
    codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    for unit in range(1, _CHAR_LOOP_UNIT + 1):
        need = (_CHAR_LOOP_REPEATS - 1) * unit
        eq = codes[unit:] == codes[:-unit]
        if eq.sum() < need:
            continue
        edges = np.diff(np.concatenate(([0], eq.astype(np.int8), [0])))
        starts = np.flatnonzero(edges == 1)
        lengths = np.flatnonzero(edges == -1) - starts
        j = int(lengths.argmax())
        if lengths[j] >= need:
            start = int(starts[j])
            times = (int(lengths[j]) + unit) // unit
            return RepetitionFinding(f"loop: {text[start:start + unit]!r} repeated {times} times in a row",
                                     text[start : start + min(200, times * unit)])
    return None


def _span_of_words(text: str, spans: list[tuple[int, int]], first: int, last: int) -> str:
    """The exact text from word ``first`` to word ``last`` (inclusive)."""
    return text[spans[first][0] : spans[last][1]]


def find_degenerate_repetition(text: str, limits: RepetitionLimits = RepetitionLimits()) -> RepetitionFinding | None:
    char_loop = character_loop(text)
    if char_loop:
        return char_loop
    lines = prose_lines(text)
    if not lines:
        return None
    body = "\n".join(lines)
    matches = list(_WORD.finditer(body))
    if len(matches) >= 2:
        # Python's string hash is stable within a process: enough to compare words.
        ids = np.fromiter((hash(m.group(0).lower()) & 0xFFFFFFF for m in matches), dtype=np.int64, count=len(matches))
        spans = [m.span() for m in matches]
        best = None
        for k, start, covered in back_to_back_runs(ids):
            if k > limits.max_loop_unit and k < limits.min_block_words:
                continue
            if all(len(m.group(0)) == 1 for m in matches[start : start + k]):
                continue  # a unit of single characters: note names, tab marks, grid letters
            repeats = covered / k
            is_loop = repeats >= limits.min_loop_repeats and covered >= limits.min_loop_words
            is_block = k >= limits.min_block_words and repeats >= 2
            if (is_loop or is_block) and (best is None or covered > best[2]):
                best = (k, start, covered, repeats, is_loop)
        if best is not None:
            k, start, covered, repeats, is_loop = best
            unit = _span_of_words(body, spans, start, start + k - 1)
            kind = "loop" if is_loop else "block repeated back to back"
            span = _span_of_words(body, spans, start, start + covered - 1)
            return RepetitionFinding(
                f"{kind}: a {k}-word unit repeated {repeats:.1f} times in a row ({covered} words): {unit[:60]!r}",
                span if span in text else unit if unit in text else "",
            )
    # The same line again and again, back to back (a templated plan repeats a line per section:
    # that is not degenerate, so only consecutive repeats count).
    run_line, run = None, 0
    for line in lines:
        if line == run_line:
            run += 1
        else:
            run_line, run = line, 1
        if run >= limits.min_line_repeats and len(_WORD.findall(line)) >= limits.min_line_words:
            return RepetitionFinding(f"the line {line[:60]!r} repeated {run}+ times in a row", line)
    return None
