"""Word-level differences between two texts, as escaped HTML with <del>/<ins> marks."""
from __future__ import annotations

import difflib
import html
import re

_TOKEN = re.compile(r"\s+|\w+|[^\w\s]")


def tokens(text: str) -> list[str]:
    """Words, whitespace runs and single punctuation marks; joining them gives ``text`` back."""
    return _TOKEN.findall(text or "")


def word_diff_html(left: str, right: str) -> tuple[str, str]:
    """(left_html, right_html): words only in ``left`` wrapped in <del>, only in ``right`` in <ins>.

    Every piece of text is HTML-escaped, so record content can never inject markup.
    """
    a, b = tokens(left), tokens(right)
    matcher = difflib.SequenceMatcher(a=a, b=b, autojunk=False)
    left_parts, right_parts = [], []
    for op, i1, i2, j1, j2 in matcher.get_opcodes():
        old, new = html.escape("".join(a[i1:i2])), html.escape("".join(b[j1:j2]))
        if op == "equal":
            left_parts.append(old)
            right_parts.append(new)
            continue
        if old:
            left_parts.append(f"<del>{old}</del>")
        if new:
            right_parts.append(f"<ins>{new}</ins>")
    return "".join(left_parts), "".join(right_parts)


def similarity(left: str, right: str) -> float:
    """Share of words in common (difflib ratio over word tokens), 0..1."""
    return difflib.SequenceMatcher(a=tokens(left), b=tokens(right), autojunk=False).ratio()


def conversation_text(messages) -> str:
    """A conversation as plain text with role headers, for display and diffing."""
    parts = []
    for message in messages if messages is not None else []:
        role = message.get("role", "?") if isinstance(message, dict) else "?"
        content = message.get("content", "") if isinstance(message, dict) else str(message)
        parts.append(f"[{role}]\n{content}")
    return "\n\n".join(parts)
