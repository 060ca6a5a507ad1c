"""Heuristic quality filters for instruction data (one step, one reason per failed check).

Checks look at the response (what fine-tuning teaches) and, for echoes, at the prompt.
Thresholds of the repetition filter follow Gopher (Rae et al. 2021) as implemented in
datatrove's GopherRepetitionFilter. The truncation check is deliberately conservative:
valid JSON, code, lists and short answers are legitimate endings.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import Iterable

from curatune.curate.base import CurateContext, Removal, Step, StepResult, chunked
from curatune.curate.config import QualityConfig
from curatune.curate.parallel import parallel_map
from curatune.curate.text import normalize, words
from curatune.records import Record

_URL = re.compile(r"(?:https?://|ftp://|www\.)\S+", re.IGNORECASE)

#: AI disclaimers anywhere in the response.
BOILERPLATE_PATTERNS = [
    r"\bas an ai(?: language)? model\b",
    r"\bas a(?:n ai)? language model\b",
    r"\bas an ai(?: assistant| chatbot)?,? i (?:do not|don't|cannot|can't|am not)\b",
    r"\bi do not have (?:personal )?(?:opinions|feelings|emotions|beliefs|real-time)\b",
    r"\bi don't have (?:personal )?(?:opinions|feelings|emotions|beliefs|real-time)\b",
    r"\bmy (?:training data|knowledge cutoff|knowledge cut-off)\b",
]
#: Refusals: only at the start of a response (quoting a refusal later is content).
REFUSAL_PATTERNS = [
    r"^(?:i'm sorry|i am sorry|sorry|unfortunately|apologies)[,.!]? (?:but )?i (?:cannot|can't|can not|am unable to|am not able to|won't|will not)\b",
    r"^i (?:cannot|can't|can not|am unable to|am not able to|won't|will not) (?:help|assist|provide|fulfill|comply|complete|answer|generate|do that|create)\b",
    r"^i(?:'m| am) not (?:able|allowed|permitted) to\b",
    r"^(?:well, |sorry, |unfortunately, )?i(?:'m| am) (?:just |only )?an ai\b",
]

_FUNCTION_WORDS = frozenset(
    "the a an and or but of to in on at by for with from as is are was were be been being this that these "
    "those which who whom whose their its his her our your my than then if because while when where into "
    "onto over under about between such not no".split()
)
_TERMINAL = set(".!?;…。！？」』\"'”’)]}>*`|")


def _gopher_top_ngram_fraction(tokens: list[str], n: int) -> float:
    grams = [" ".join(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]
    if not grams:
        return 0.0
    gram, count = Counter(grams).most_common(1)[0]
    if count < 2:
        return 0.0
    total = len("".join(tokens))
    return len(gram.replace(" ", "")) * count / max(total, 1)


def _gopher_dup_ngram_fraction(tokens: list[str], n: int) -> float:
    # datatrove's find_all_duplicate: characters of n-grams seen before, skipping past each repeat.
    seen: set[str] = set()
    repeated, i = 0, 0
    while i < len(tokens) - n + 1:
        gram = "".join(tokens[i : i + n])
        if gram in seen:
            repeated += len(gram)
            i += n
        else:
            seen.add(gram)
            i += 1
    return repeated / max(len("".join(tokens)), 1)


def _dup_line_fraction(text: str) -> float:
    lines = [ln.strip() for ln in text.split("\n") if len(ln.strip()) >= 10]
    if len(lines) < 2:
        return 0.0
    return 1.0 - len(set(lines)) / len(lines)


def _unclosed_brackets(text: str) -> int:
    """Opening brackets left open, ignoring brackets inside JSON-style strings."""
    depth, in_string, escape = 0, False, False
    for ch in text:
        if in_string:
            if escape:
                escape = False
            elif ch == "\\":
                escape = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "{[":
            depth += 1
        elif ch in "}]":
            depth -= 1
    return depth + (1 if in_string else 0)


_CODE_LINE = re.compile(r"^(?:\s{2,}|\t)|[;{}():,\\]\s*$|[=$\[]|#!|->|::|</?\w+[ >]|^\s*(?:def|class|import|from|return|if|for|while|fn|let|const|var|public|private|func|SELECT|echo)\b")


def looks_like_code(text: str) -> bool:
    """Several lines, most of them code-shaped (indented, ending in ; { } ) : or holding = $ [ ...)."""
    if text.startswith("#!") or text.lstrip().startswith("```"):
        return True
    lines = [ln for ln in text.split("\n") if ln.strip()]
    if len(lines) < 2:
        return False
    return sum(bool(_CODE_LINE.search(ln)) for ln in lines) >= 0.5 * len(lines)


def truncation_reason(response: str, min_words: int = 12) -> str | None:
    """Why a response looks cut off, or None. Conservative on purpose (see module doc)."""
    text = response.strip()
    if not text:
        return None
    if text.count("```") % 2 == 1:
        return "code block opened with ``` and never closed"
    if text[0] in "{[":
        try:
            json.loads(text)
            return None  # valid JSON is complete
        except ValueError:
            if _unclosed_brackets(text) > 0:
                return "JSON value cut off (unbalanced brackets)"
            return None
    if text.endswith("```"):
        return None
    last_line = text.rsplit("\n", 1)[-1].strip()
    tokens = text.split()
    if len(tokens) < min_words:
        return None  # short answers ("Paris", "42", "Yes") are complete
    if re.match(r"^(?:[-*•+]|\d+[.)]|[a-zA-Z][.)]|\|)\s", last_line) or last_line.endswith("|"):
        return None  # a list item or table row may end without punctuation
    if looks_like_code(text):
        return None  # code lines need no sentence punctuation
    end = text[-1]
    if end in _TERMINAL or end.isdigit() or _URL.search(last_line.split()[-1]):
        return None
    if end in ",:-–(":
        return f"ends with {end!r} mid-sentence"
    last_word = re.sub(r"\W+", "", tokens[-1].lower())
    if last_word in _FUNCTION_WORDS:
        return f"ends mid-sentence on {tokens[-1]!r}"
    # Several finished sentences, then an unfinished one of several words.
    finished = re.findall(r"[.!?](?:\s|$)", text)
    tail = re.split(r"[.!?]\s", text)[-1]
    # A capitalized last word is usually a name or a title ("Yours sincerely, Jane Austen").
    if len(finished) >= 2 and len(tail.split()) >= 4 and "\n" not in tail and last_word.isalpha() and tokens[-1][0].islower():
        return "last sentence has no ending punctuation"
    return None


class QualityChecker:
    """Runs the configured checks on one record; returns (reason, detail) or None."""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.boilerplate = [re.compile(p, re.IGNORECASE) for p in BOILERPLATE_PATTERNS + cfg.extra_boilerplate_patterns]
        self.refusal = [re.compile(p, re.IGNORECASE) for p in REFUSAL_PATTERNS]

    def failures(self, prompt: str, user: str, response: str, first_only: bool = True) -> list[tuple[str, str]]:
        cfg = self.cfg
        out: list[tuple[str, str]] = []

        def fail(reason: str, detail: str) -> bool:
            out.append((reason, detail))
            return first_only

        stripped = response.strip()
        if not stripped:
            fail("empty_response", "response is empty or whitespace")
            return out
        tokens = words(stripped)
        n_chars = len(stripped)
        if n_chars < cfg.min_response_chars or len(stripped.split()) < cfg.min_response_words:
            if fail("too_short", f"{n_chars} chars, {len(stripped.split())} words"):
                return out
        if n_chars > cfg.max_response_chars:
            if fail("too_long", f"response has {n_chars} chars > {cfg.max_response_chars}"):
                return out
        if len(prompt) > cfg.max_prompt_chars:
            if fail("too_long", f"prompt has {len(prompt)} chars > {cfg.max_prompt_chars}"):
                return out
        is_code = looks_like_code(stripped)
        if cfg.boilerplate:
            head = stripped[:300]
            for pattern in self.refusal:
                if pattern.search(head):
                    if fail("refusal", f"matches {pattern.pattern!r}"):
                        return out
                    break
            for pattern in self.boilerplate if not is_code else ():  # code may quote such strings
                match = pattern.search(stripped)
                if match:
                    if fail("boilerplate", f"contains {match.group(0)!r}"):
                        return out
                    break
        if cfg.echo_prompt and n_chars >= cfg.echo_min_chars:
            r, u, p = normalize(stripped), normalize(user), normalize(prompt)
            if r and (r == u or r == p or (len(u) >= cfg.echo_min_chars and u in r and len(r) - len(u) <= max(10, 0.1 * len(u)))):
                if fail("echo_prompt", "response repeats the prompt"):
                    return out
        if cfg.repetition and len(tokens) >= cfg.repetition_min_words:
            # Code repeats identifiers by nature: only its duplicate-line share is checked.
            reason = self._repetition(stripped, tokens, lines_only=is_code)
            if reason and fail("repetition", reason):
                return out
        if n_chars >= cfg.symbol_min_chars and not is_code:
            symbols = sum(1 for ch in stripped if not (ch.isalnum() or ch.isspace()))
            ratio = symbols / n_chars
            # A single token (a regex, a formula, a path) is an answer, not symbol soup.
            if ratio > cfg.max_symbol_ratio and len(stripped.split()) >= 5:
                if fail("symbol_ratio", f"{ratio:.2f} of characters are symbols > {cfg.max_symbol_ratio}"):
                    return out
            urls = [m.group(0) for m in _URL.finditer(stripped)]
            url_chars = sum(len(u) for u in urls)
            # Link spam is many links; one URL in a tool call or an answer is content.
            if len(set(urls)) >= 3 and url_chars / n_chars > cfg.max_url_ratio:
                if fail("url_ratio", f"{url_chars / n_chars:.2f} of characters are URLs > {cfg.max_url_ratio}"):
                    return out
        if cfg.truncation:
            why = truncation_reason(stripped, cfg.truncation_min_words)
            if why and fail("truncated", why):
                return out
        return out

    def _repetition(self, text: str, tokens: list[str], lines_only: bool = False) -> str | None:
        cfg = self.cfg
        frac = _dup_line_fraction(text)
        if frac > cfg.max_dup_line_fraction:
            return f"{frac:.2f} of lines are duplicates"
        if lines_only:
            return None
        for n, limit in sorted(cfg.max_top_ngram_fraction.items()):
            if len(tokens) < cfg.top_ngram_min_words:
                break
            frac = _gopher_top_ngram_fraction(tokens, n)
            if frac > limit:
                return f"top {n}-gram covers {frac:.2f} of characters > {limit}"
        # Short responses repeat a phrase or two legitimately: twice the tolerance below top_ngram_min_words.
        scale = 1.0 if len(tokens) >= cfg.top_ngram_min_words else 2.0
        for n, limit in sorted(cfg.max_dup_ngram_fraction.items()):
            frac = _gopher_dup_ngram_fraction(tokens, n)
            limit = min(1.0, limit * scale)
            if frac > limit:
                return f"duplicated {n}-grams cover {frac:.2f} of characters > {limit}"
        return None


def _views(record: Record) -> tuple[str, str, str]:
    idx = record.last_assistant_index
    users = [m["content"] for m in record.messages[:idx] if m["role"] == "user"]
    return record.prompt, users[-1] if users else "", record.response


def _check_chunk(args: tuple[dict, list[tuple[str, str, str]]]) -> list[tuple[str, str] | None]:
    cfg_dict, views = args
    checker = QualityChecker(QualityConfig.model_validate(cfg_dict))
    results = []
    for prompt, user, response in views:
        failures = checker.failures(prompt, user, response)
        results.append(failures[0] if failures else None)
    return results


_DEFAULT_CHECKER: QualityChecker | None = None


def heuristic_quality(record: Record) -> float:
    """A score for keep='quality': fewer failed checks first, then a longer response."""
    global _DEFAULT_CHECKER
    if _DEFAULT_CHECKER is None:
        _DEFAULT_CHECKER = QualityChecker(QualityConfig())
    failures = _DEFAULT_CHECKER.failures(*_views(record), first_only=False)
    return -len(failures) + 0.01 * math.log1p(len(record.response.strip()))


class QualityFilter(Step):
    config_class = QualityConfig
    reasons = (
        "empty_response", "too_short", "too_long", "refusal", "boilerplate", "echo_prompt",
        "repetition", "symbol_ratio", "url_ratio", "truncated",
    )

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg_dict = self.config.model_dump()
        chunks = [(cfg_dict, [_views(r) for r in c]) for c in chunked(records, 2000)]
        with context.progress.task("quality filters", len(records)) as task:
            parts = parallel_map(_check_chunk, chunks, context.workers, task, [len(c[1]) for c in chunks])
        verdicts: Iterable = (v for part in parts for v in part)
        kept, removed = [], []
        for record, verdict in zip(records, verdicts):
            if verdict is None:
                kept.append(record)
            else:
                removed.append(Removal(record, verdict[0], verdict[1]))
        return StepResult(kept, removed)
