"""The prose of a chat message: what is left once code, tables, URLs and data are taken out.

Language ID and the repetition check judge *writing*. Chat answers mix writing with code
blocks, inline code, URLs, base64 blobs, number arrays and tables; all of these repeat by
nature and carry no language, so both rules look at :func:`prose` (or at
:func:`prose_lines`, the lines outside code blocks and tables).
"""
from __future__ import annotations

import re

#: A fenced code block (``` or ~~~), closed or running to the end of the text.
_FENCED = re.compile(r"(?ms)^[ \t]*(```|~~~).*?(?:^[ \t]*\1[ \t]*$|\Z)")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
#: Long runs without spaces that are data, not words: base64, hashes, hex, keys.
_BLOB = re.compile(r"(?<![\w+/=-])(?=[\w+/=-]*[\d+/=_])[\w+/=-]{24,}")
#: Numbers and runs of numbers with separators: "1, 2, 3", "[0.5, 0.25]", "2023-01-01", "12:30".
_NUMBERS = re.compile(r"[-+]?\d[\d.,:;/\s\[\](){}+*=-]*")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>\n]{0,200}>")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^\s*[-:| ]{3,}\s*$")


def without_code_blocks(text: str) -> str:
    return _FENCED.sub("\n", text)


def prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks and markdown tables (stripped, non-empty)."""
    out = []
    for line in without_code_blocks(text).split("\n"):
        stripped = line.strip()
        if stripped and not _TABLE_ROW.match(stripped):
            out.append(stripped)
    return out


def prose(text: str) -> str:
    """The writing of a message: no code, URLs, e-mail addresses, blobs, numbers or markup."""
    text = without_code_blocks(text)
    text = _INLINE_CODE.sub(" ", text)
    text = _URL.sub(" ", text)
    text = _EMAIL.sub(" ", text)
    text = _HTML_TAG.sub(" ", text)
    text = _BLOB.sub(" ", text)
    text = _NUMBERS.sub(" ", text)
    return re.sub(r"[ \t]+", " ", text)


def letters(text: str) -> int:
    return sum(1 for ch in text if ch.isalpha())
