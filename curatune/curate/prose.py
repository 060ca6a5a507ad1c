"""The prose of a chat message: what is left once code, tables, URLs and data are taken out.

Language ID and the repetition check judge *writing*. Chat answers mix writing with code
blocks, inline code, URLs, base64 blobs, number arrays and tables; all of these repeat by
nature and carry no language, so both rules look at :func:`prose` (or at
:func:`prose_lines`, the lines outside code blocks and tables).
"""
from __future__ import annotations

import json
import re

#: A fenced code block (``` or ~~~), closed or running to the end of the text.
_FENCED = re.compile(r"(?ms)^[ \t]*(```|~~~).*?(?:^[ \t]*\1[ \t]*$|\Z)")
_INLINE_CODE = re.compile(r"`[^`\n]+`")
_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)
_EMAIL = re.compile(r"\b[\w.+-]+@[\w-]+\.[\w.-]+\b")
#: Long runs without spaces that are data, not words: base64, hashes, hex, keys.
_BLOB = re.compile(r"(?<![\w+/=-])[\w+/=-]{24,}+")
#: Numbers and runs of numbers with separators: "1, 2, 3", "[0.5, 0.25]", "2023-01-01", "12:30".
_NUMBERS = re.compile(r"[-+]?\d[\d.,:;/\s\[\](){}+*=-]*")
#: LaTeX math ($$...$$, $...$, \[...\], \(...\)) and commands (\frac, \alpha_{f}).
_LATEX_MATH = re.compile(r"\$\$.*?\$\$|\\\[.*?\\\]|\\\(.*?\\\)|\$[^$\n]{1,300}\$", re.DOTALL)
_LATEX_COMMAND = re.compile(r"\\[A-Za-z]+")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>\n]{0,200}>")
_TABLE_ROW = re.compile(r"^\s*\|.*\|\s*$|^\s*[-:| ]{3,}\s*$")


def _blob_or_word(match: re.Match) -> str:
    # A long run with a digit or + / = _ is data (base64, a hash, a key); a long word stays.
    run = match.group(0)
    return " " if any(ch.isdigit() or ch in "+/=_" for ch in run) else run


def without_code_blocks(text: str) -> str:
    return _FENCED.sub("\n", text) if ("```" in text or "~~~" in text) else text


def prose_lines(text: str) -> list[str]:
    """Lines outside fenced code blocks and markdown tables (stripped, non-empty)."""
    out = []
    for line in without_code_blocks(text).split("\n"):
        stripped = line.strip()
        if stripped and not _TABLE_ROW.match(stripped):
            out.append(stripped)
    return out


def prose(text: str) -> str:
    """The writing of a message: no code, URLs, e-mail addresses, blobs, numbers or markup.

    A message that is a JSON value is data, not writing: it has no prose (its keys are often
    English whatever the language of the conversation).
    """
    stripped = text.strip()
    if stripped[:1] in ("{", "[") and stripped[-1:] in ("}", "]"):
        try:
            json.loads(stripped)
            return ""
        except ValueError:
            pass
    text = without_code_blocks(text)
    # Each pattern runs only when its cheap marker is present (most chat text has no URL or blob).
    if "`" in text:
        text = _INLINE_CODE.sub(" ", text)
    lowered = text.lower()
    if "://" in text or "www." in lowered:
        text = _URL.sub(" ", text)
    if "@" in text:
        text = _EMAIL.sub(" ", text)
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)
    if "\\" in text or "$" in text:
        text = _LATEX_COMMAND.sub(" ", _LATEX_MATH.sub(" ", text))
    text = _BLOB.sub(_blob_or_word, text)
    text = _NUMBERS.sub(" ", text)
    return re.sub(r"[ \t]+", " ", text)


_NOT_LETTER = re.compile(r"[\W\d_]+")


def letters(text: str) -> int:
    """Letters in the text (any script); counted in C by deleting everything else."""
    return len(_NOT_LETTER.sub("", text))
