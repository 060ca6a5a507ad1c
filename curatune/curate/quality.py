"""Heuristic quality filters for instruction data (one step, one reason per failed check).

Every check judges one assistant turn (with its user turn and the context before it), on
every assistant turn of a conversation, in order. The first failing turn decides: by
default the conversation is *trimmed* before that exchange and the clean prefix is kept
(a single-turn record has no prefix, so it is dropped); ``actions`` sets a rule to
``drop`` instead.

Repetition looks for degenerate output (loops, blocks repeated back to back, the same
line again and again outside code and tables; see :mod:`curatune.curate.repetition`);
Gopher's web-document thresholds (Rae et al. 2021, as in datatrove's
GopherRepetitionFilter) remain available as ``repetition_method: gopher``. The truncation
check is deliberately conservative: valid JSON, code, lists, short answers and a closing
horizontal rule are legitimate endings.
"""
from __future__ import annotations

import json
import math
import re
from collections import Counter
from typing import NamedTuple

from curatune.curate.base import (
    DROP,
    TRIM,
    CurateContext,
    Removal,
    Rule,
    Step,
    StepResult,
    chunked,
)
from curatune.curate.config import QUALITY_DEFAULT_ACTIONS, QualityConfig
from curatune.curate.parallel import parallel_imap
from curatune.curate.prose import prose_lines
from curatune.curate.repetition import (
    RepetitionLimits,
    character_loop,
    find_degenerate_repetition,
)
from curatune.curate.text import normalize, words
from curatune.curate.turns import assistant_turns, prefix_record
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


#: A closing horizontal rule (markdown ---, ***, ___): the answer ended on purpose.
_HORIZONTAL_RULE = re.compile(r"(?:^|\n)[ \t]*(?:-[ \t]*){3,}$|(?:^|\n)[ \t]*(?:\*[ \t]*){3,}$|(?:^|\n)[ \t]*(?:_[ \t]*){3,}$")


#: The next user turn asks the assistant to go on: evidence that the answer stopped early.
_ASKS_TO_CONTINUE = re.compile(
    r"^\W*(?:please\s+)?(?:continue|go on|keep going|finish|carry on|more|next|resume|proceed|"
    r"continue (?:from|writing|please)|pokra|continua|contin[uú]e|weiter|계속|继续|繼續|続け)",
    re.IGNORECASE,
)
#: A prose answer without a final full stop is only suspect when it is this long (ChatGPT cut
#: answers at a length limit; a short one missing its full stop is usually just that).
_LONG_ANSWER_CHARS = 1200


def _ends_outside_code(text: str) -> bool:
    """After an odd number of fences: does the text end on a prose sentence (so no block is left open)?

    Continuation turns ("continue" after a cut-off answer) often start inside the previous
    turn's code block, so their first fence closes a block and their fences are odd.
    """
    last_line = text.rstrip().rsplit("\n", 1)[-1].strip()
    return bool(re.search(r"[A-Za-z][^`]*[.!?]$", last_line)) and len(last_line.split()) >= 5 \
        and not looks_like_code(last_line + "\n" + last_line)


def _verse(text: str) -> bool:
    """The last stanza is verse: several short lines, most without end punctuation (songs, poems)."""
    stanza = [ln.strip() for ln in text.rstrip().split("\n\n")[-1].split("\n") if ln.strip()]
    if len(stanza) < 3:
        return False
    short = [ln for ln in stanza if len(ln) <= 70]
    open_ended = [ln for ln in stanza if ln[-1] not in ".!?"]
    return len(short) >= 0.75 * len(stanza) and len(open_ended) >= 0.5 * len(stanza)


def truncation_reason(response: str, min_words: int = 12, next_user: str | None = None) -> str | None:
    """Why a response looks cut off, or None. Conservative on purpose (see module doc).

    ``next_user``: the user turn that follows (when there is one); a request to continue
    supports the weakest signal (a long answer whose last sentence has no ending).
    """
    text = response.strip()
    if not text:
        return None
    if _HORIZONTAL_RULE.search(text):
        return None
    if text.count("```") % 2 == 1:
        if _ends_outside_code(text):
            return None
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
        return _code_block_cut(text)
    if "```" in text:
        # Prose after the last code block: judge that prose, not the code above it.
        tail = text.rsplit("```", 1)[-1].strip()
        if not tail:
            return None
        if len(tail.split()) >= 2 and not looks_like_code(tail):
            return _prose_cut(tail, text, min_words=0, next_user=next_user, after_code=True)
        return None
    return _prose_cut(text, text, min_words, next_user)


#: How a code line that cannot be the last one ends: an open bracket, an operator, a colon, a comma.
_OPEN_CODE_END = re.compile(r"(?:[=(\[{,:+\-*/\\&|]|\b(?:and|or|not|in|import|from|if|new|await))$")


def _code_block_cut(text: str) -> str | None:
    """A closed code block whose last line stops mid-statement (ChatGPT hit its length limit and
    the page closed the block): ``clf.fit(X, y``, ``this.comments =``, ``class QuestsScreen(``."""
    body = text[: -3].rstrip()
    opening = body.rfind("```")
    if opening < 0:
        return None
    lines = [ln for ln in body[opening:].split("\n")[1:] if ln.strip()]
    if not lines:
        return None
    last = lines[-1].strip()
    if last.startswith(("#", "//", "--", "*", "<!--")) or last.endswith("*/") or not any(ch.isalnum() for ch in last):
        return None  # a comment, or a border of an ASCII table or drawing, may end anyhow
    unbalanced = any(last.count(a) > last.count(b) for a, b in (("(", ")"), ("[", "]"), ("{", "}")))
    # The whole block: a dict, list or call opened and never closed (strings in double quotes skipped).
    unbalanced = unbalanced or _unclosed_brackets(body[opening:].split("\n", 1)[-1]) > 0
    if _OPEN_CODE_END.search(last) or unbalanced or last.count('"') % 2 == 1:
        return f"code block ends mid-statement: {last[-40:]!r}"
    return None


def _prose_cut(text: str, whole: str, min_words: int, next_user: str | None, after_code: bool = False) -> str | None:
    last_line = text.rsplit("\n", 1)[-1].strip()
    tokens = text.split()
    if re.fullmatch(r"(?:\d+[.)]|[-*•+])", last_line):
        return "ends on an empty list item"
    asked_to_continue = bool(next_user and _ASKS_TO_CONTINUE.search(next_user.strip()))
    if (asked_to_continue and len(whole) >= _LONG_ANSWER_CHARS and text[-1] not in _TERMINAL
            and not looks_like_code(text)):
        # A long answer that stops without an ending, and the user's next turn asks to go on:
        # ChatGPT hit its length limit (its "Continue" button sends "Continue writing please").
        return "stops without an ending and the user then asks to continue"
    if (after_code and len(whole) >= _LONG_ANSWER_CHARS and len(tokens) >= 6 and text[-1].isalpha()
            and tokens[-1][0].islower()):
        return "the prose after the code stops without an ending"
    if len(tokens) < min_words:
        return None  # short answers ("Paris", "42", "Yes") are complete
    if re.match(r"^(?:[-*•+]|\d+[.)]|[a-zA-Z][.)]|\|)\s", last_line) or last_line.endswith("|"):
        # A list item or table row may end without punctuation, but not on "the", "and", "with".
        last = re.sub(r"\W+", "", tokens[-1].lower())
        if last in _FUNCTION_WORDS and not last_line.endswith("|") and len(last_line.split()) >= 4:
            return f"list item ends mid-sentence on {tokens[-1]!r}"
        return None
    if looks_like_code(text):
        return None  # code lines need no sentence punctuation
    end = text[-1]
    if end in _TERMINAL or end.isdigit() or _URL.search(last_line.split()[-1]):
        return None
    if _verse(text):
        return None  # a song or poem ends on a line, not a sentence
    if end in ",:-–(":
        return f"ends with {end!r} mid-sentence"
    last_word = re.sub(r"\W+", "", tokens[-1].lower())
    if last_word in _FUNCTION_WORDS:
        return f"ends mid-sentence on {tokens[-1]!r}"
    # Several finished sentences, then an unfinished one of several words.
    finished = re.findall(r"[.!?](?:\s|$)", text)
    tail = re.split(r"[.!?]\s", text)[-1]
    # A capitalized last word is usually a name or a title ("Yours sincerely, Jane Austen"); a
    # short answer that only lacks its full stop is usually complete.
    if (len(finished) >= 2 and len(tail.split()) >= 4 and "\n" not in tail and last_word.isalpha()
            and tokens[-1][0].islower() and (len(whole) >= _LONG_ANSWER_CHARS or asked_to_continue)):
        return "last sentence has no ending punctuation" + (" (the user then asks to continue)" if asked_to_continue else "")
    return None


#: The user asked for something drawn in symbols: art, tabs, diagrams, tables, maps.
_ASKS_FOR_SYMBOLS = re.compile(
    r"\b(?:ascii|art|tabs?|tablature|diagrams?|drawings?|draw|charts?|tables?|visuali[sz]e|visual|maps?|"
    r"grid|emojis?|symbols?|regex|regular expression|figlet|banner)\b",
    re.IGNORECASE,
)
#: After "I cannot ...": the answer turns to helping ("However, here is ...").
#: A fenced code block with at least one non-blank line inside.
_CODE_BLOCK = re.compile(r"```[^\n]*\n\s*\S")
_PIVOT_TO_HELP = re.compile(
    r"\b(?:however|but i can|but here|here is|here's|here are|instead|that said|in general|below is|"
    r"as an alternative|i can (?:provide|give|offer|help|show|suggest))\b",
    re.IGNORECASE,
)


#: The user asked for links: URLs in the answer are what was asked for.
_ASKS_FOR_LINKS = re.compile(
    r"\b(?:links?|urls?|sources?|references?|citations?|cite|citing|websites?|web ?sites?|resources?|"
    r"bibliography|articles?|papers?|where (?:can|could|do|should) i (?:find|read|learn|get|buy|download))\b|"
    r"web search results",
    re.IGNORECASE,
)
#: A URL that is a citation: a markdown link, a numbered reference, or a line of a source list.
_CITED_URL = re.compile(
    r"\]\(\s*(?:https?://|www\.)|^\s*(?:[-*•]|\d+[.)]|\[\d+\])\s.*(?:https?://|www\.)|"
    r"(?:source|sources|reference|references|see|via|from|at|available at|read more)\s*:?\s*<?(?:https?://|www\.)",
    re.IGNORECASE | re.MULTILINE,
)


def _symbol_heavy(text: str) -> bool:
    """The user pasted a drawing or a diagram themselves (the answer continuing it is no junk)."""
    stripped = text.strip()
    if len(stripped) < 40:
        return False
    return sum(1 for ch in stripped if not (ch.isalnum() or ch.isspace())) / len(stripped) > 0.3


class Finding(NamedTuple):
    """One failed check: the ledger reason, a description, and the flagged text (or "")."""

    reason: str
    detail: str
    span: str = ""


class QualityChecker:
    """Runs the configured checks on one assistant turn; returns the failures found."""

    def __init__(self, cfg: QualityConfig):
        self.cfg = cfg
        self.boilerplate = [re.compile(p, re.IGNORECASE) for p in BOILERPLATE_PATTERNS + cfg.extra_boilerplate_patterns]
        self.refusal = [re.compile(p, re.IGNORECASE) for p in REFUSAL_PATTERNS]
        self.limits = RepetitionLimits(
            min_loop_repeats=cfg.min_loop_repeats, min_loop_words=cfg.min_loop_words,
            min_block_words=cfg.min_block_words, min_line_repeats=cfg.min_line_repeats,
        )

    def failures(self, prompt: str, user: str, response: str, first_only: bool = True) -> list[Finding]:
        """Checks of one turn given its whole prompt (the context before it) and its user turn."""
        return self.check(len(prompt), lambda: prompt, user, response, first_only)

    def check(self, prompt_chars: int, prompt_of, user: str, response: str, first_only: bool = True,
              next_user: str | None = None) -> list[Finding]:
        """``prompt_of()`` builds the prompt only when a check needs it (long chats would pay O(n^2))."""
        cfg = self.cfg
        out: list[Finding] = []

        def fail(reason: str, detail: str, span: str = "") -> bool:
            out.append(Finding(reason, detail, span if span and span in response else ""))
            return first_only

        stripped = response.strip()
        if not stripped:
            fail("empty_response", "response is empty or whitespace")
            return out
        tokens = words(stripped)
        n_chars = len(stripped)
        if n_chars < cfg.min_response_chars or len(stripped.split()) < cfg.min_response_words:
            if fail("too_short", f"{n_chars} chars, {len(stripped.split())} words", stripped):
                return out
        if n_chars > cfg.max_response_chars:
            if fail("too_long", f"response has {n_chars} chars > {cfg.max_response_chars}"):
                return out
        if prompt_chars > cfg.max_prompt_chars:
            if fail("too_long", f"prompt has {prompt_chars} chars > {cfg.max_prompt_chars}"):
                return out
        is_code = looks_like_code(stripped)
        if cfg.boilerplate:
            head = stripped[:300]
            for pattern in self.refusal:
                match = pattern.search(head)
                if match:
                    if not self._hedge_then_help(stripped[match.end():]):
                        if fail("refusal", f"matches {pattern.pattern!r}", match.group(0)):
                            return out
                    break
            for pattern in self.boilerplate if not is_code else ():  # code may quote such strings
                match = pattern.search(stripped)
                if match:
                    if fail("boilerplate", f"contains {match.group(0)!r}", match.group(0)):
                        return out
                    break
        if cfg.echo_prompt and n_chars >= cfg.echo_min_chars:
            r, u = normalize(stripped), normalize(user)
            # The whole prompt can only be echoed when it is about as long as the answer.
            p = normalize(prompt_of()) if prompt_chars <= 2 * n_chars + 100 else ""
            if r and (r == u or r == p or (len(u) >= cfg.echo_min_chars and u in r and len(r) - len(u) <= max(10, 0.1 * len(u)))):
                if fail("echo_prompt", "response repeats the prompt", stripped[:200]):
                    return out
        if cfg.repetition and len(tokens) >= cfg.repetition_min_words:
            found = self._repetition(stripped, tokens, is_code)
            if found and fail("repetition", *found):
                return out
        if n_chars >= cfg.symbol_min_chars and not is_code:
            # Symbols inside code blocks and tables are content, and so is art or tabs the user asked for.
            writing = "\n".join(prose_lines(stripped))
            symbols = sum(1 for ch in writing if not (ch.isalnum() or ch.isspace()))
            ratio = symbols / max(len(writing), 1)
            # A single token (a regex, a formula, a path) is an answer, not symbol soup.
            if (ratio > cfg.max_symbol_ratio and len(writing) >= cfg.symbol_min_chars and len(writing.split()) >= 5
                    and not _ASKS_FOR_SYMBOLS.search(user) and not _symbol_heavy(user)):
                if fail("symbol_ratio", f"{ratio:.2f} of characters are symbols > {cfg.max_symbol_ratio}"):
                    return out
            found = self._url_spam(stripped, user)
            if found and fail("url_ratio", *found):
                return out
        if cfg.truncation:
            why = truncation_reason(stripped, cfg.truncation_min_words, next_user)
            if why and fail("truncated", why, stripped[-80:]):
                return out
        return out

    def _hedge_then_help(self, rest: str) -> bool:
        """'I cannot X directly, but here is Y' followed by a real answer is a hedge, not a refusal.

        A real answer is at least ``refusal_help_words`` more words, or a code block: code is dense,
        so "I cannot see all of your code. However, ... ```python ...```" answers in few words
        (two such hedges were the misses of the held-out ShareGPT sample)."""
        help_words = self.cfg.refusal_help_words
        if help_words <= 0 or not _PIVOT_TO_HELP.search(rest[:800]):
            return False
        return len(rest.split()) >= help_words or bool(_CODE_BLOCK.search(rest))

    def _url_spam(self, text: str, user: str) -> tuple[str, str] | None:
        """Link spam: many links nobody asked for that are not citations (one URL is content)."""
        cfg = self.cfg
        urls = [m.group(0) for m in _URL.finditer(text)]
        if len(set(urls)) < 3:
            return None
        ratio = sum(len(u) for u in urls) / len(text)
        if ratio <= cfg.max_url_ratio:
            return None
        if cfg.url_allow_requested and _ASKS_FOR_LINKS.search(user):
            return None
        if cfg.url_allow_citations and len(_CITED_URL.findall(text)) >= 0.5 * len(urls):
            return None
        return f"{ratio:.2f} of characters are URLs > {cfg.max_url_ratio}", urls[0]

    def _repetition(self, text: str, tokens: list[str], is_code: bool) -> tuple[str, str] | None:
        cfg = self.cfg
        if cfg.repetition_method == "degenerate":
            # Code repeats lines and identifiers by nature: only a character loop counts there.
            found = character_loop(text) if is_code else find_degenerate_repetition(text, self.limits)
            return (found.detail, found.span) if found else None
        reason = self._gopher_repetition(text, tokens, lines_only=is_code)
        return (reason, "") if reason else None

    def _gopher_repetition(self, text: str, tokens: list[str], lines_only: bool = False) -> str | None:
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


class TurnVerdict(NamedTuple):
    """The first failing assistant turn of a record."""

    index: int  # the assistant message
    exchange_start: int  # where a trim cuts
    finding: Finding


def first_failure(checker: QualityChecker, messages: list[dict[str, str]]) -> TurnVerdict | None:
    for turn in assistant_turns(messages):
        if turn.is_tool_call:
            continue  # a tool call is structured output: the text rules (empty, short, cut off, ...) do not apply
        found = checker.check(turn.context_chars, lambda t=turn: t.context, turn.user, turn.response,
                              next_user=turn.next_user)
        if found:
            return TurnVerdict(turn.index, turn.exchange_start, found[0])
    return None


def _check_chunk(args: tuple[dict, list[list[dict[str, str]]]]) -> list[TurnVerdict | None]:
    cfg_dict, conversations = args
    checker = QualityChecker(QualityConfig.model_validate(cfg_dict))
    return [first_failure(checker, messages) for messages in conversations]


def _views(record: Record) -> tuple[str, str, str]:
    idx = record.last_assistant_index
    users = [m["content"] for m in record.messages[:idx] if m["role"] == "user"]
    return record.prompt, users[-1] if users else "", record.response


_DEFAULT_CHECKER: QualityChecker | None = None


def heuristic_quality(record: Record) -> float:
    """A score for keep='quality': fewer failed checks of the last turn first, then a longer response."""
    global _DEFAULT_CHECKER
    if _DEFAULT_CHECKER is None:
        _DEFAULT_CHECKER = QualityChecker(QualityConfig())
    failures = _DEFAULT_CHECKER.failures(*_views(record), first_only=False)
    return -len(failures) + 0.01 * math.log1p(len(record.response.strip()))


_RULE_TEXT = {
    "empty_response": "the assistant turn is empty or whitespace",
    "too_short": "the assistant turn has fewer than min_response_chars / min_response_words",
    "too_long": "the assistant turn is longer than max_response_chars, or the context before it than max_prompt_chars",
    "refusal": "the assistant turn opens with a refusal",
    "boilerplate": "the assistant turn contains AI boilerplate ('As an AI language model')",
    "echo_prompt": "the assistant turn repeats its user turn",
    "repetition": "degenerate repetition in the assistant turn (loop, block repeated back to back, repeated lines)",
    "symbol_ratio": "the assistant turn is mostly symbols",
    "url_ratio": "the assistant turn is mostly links nobody asked for that are not citations",
    "truncated": "the assistant turn is cut off mid-sentence, in an open code block or JSON value",
}


class QualityFilter(Step):
    config_class = QualityConfig
    reasons = tuple(_RULE_TEXT)
    rules = {reason: Rule(reason, "turn", QUALITY_DEFAULT_ACTIONS[reason], text) for reason, text in _RULE_TEXT.items()}

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        cfg_dict = cfg.model_dump()
        actions = {**QUALITY_DEFAULT_ACTIONS, **cfg.actions}
        chunks = ((cfg_dict, [r.messages for r in c]) for c in chunked(records, 1000))  # built as workers take them
        with context.progress.task("quality filters", len(records)) as task:
            parts = list(parallel_imap(_check_chunk, chunks, context.workers, task, lambda chunk: len(chunk[1])))
        verdicts = (v for part in parts for v in part)
        kept, removed = [], []
        for record, verdict in zip(records, verdicts):
            if verdict is None:
                kept.append(record)
                continue
            finding = verdict.finding
            detail = f"turn {verdict.index}: {finding.detail}"
            shorter = prefix_record(record, verdict.exchange_start) if actions[finding.reason] == TRIM else None
            if shorter is not None:
                kept.append(shorter)
                removed.append(Removal(record, finding.reason, detail, action=TRIM, turn=verdict.exchange_start,
                                       span=finding.span, replacement=shorter))
            else:
                if actions[finding.reason] == TRIM:
                    detail += " (no complete exchange before it: dropped)"
                removed.append(Removal(record, finding.reason, detail, action=DROP, turn=verdict.index,
                                       span=finding.span))
        return StepResult(kept, removed)
