"""Language filter with offline language ID (py3langid, a numpy port of langid.py).

It judges the *prose of the whole conversation* (one verdict per record, action drop):
code blocks, inline code, URLs, e-mail addresses, base64-like runs, numbers and number
arrays are stripped first (:func:`curatune.curate.prose.prose`), because they carry no
language and mislead character n-gram ID (an English chat that opens with a base64 blob
or a number array came out as another language when the first 1,500 characters of
everything were identified). Why the whole conversation and not each turn: a turn is
often too short to identify, and a conversation in the target language legitimately
holds turns in another one (a translation, a quoted foreign text); the question a user
asks is "is this conversation in my language?".

Fast path: one ID call on a sample of every message's prose. A record is only a suspect
when that says a non-target language with probability >= ``min_confidence`` and a margin
of ``min_margin`` over the best target language. Suspects are confirmed message by
message, weighted by letters: the user side and the assistant side must each be mostly
(by letters) in a non-target language. A message identified as non-target is first
re-identified without its capitalized words (names mislead: English about "Quintus
Caecilius Metellus" comes out as Latin).
"""
from __future__ import annotations

import re

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from curatune.curate.base import (
    DROP,
    CurateContext,
    Removal,
    Rule,
    Step,
    StepResult,
    chunked,
)
from curatune.curate.config import LanguageConfig
from curatune.curate.parallel import parallel_imap
from curatune.curate.prose import letters, prose
from curatune.records import Record

# Language ID converges long before this; a sample keeps long conversations cheap.
_SAMPLE_CHARS = 1500
_MESSAGE_CHARS = 1500
# Prose is extracted from this much of each message (a long message says its language early).
_PROSE_CHARS = 4000
# Capitalized words: mostly names, which mislead character n-gram language ID.
_CAPITALIZED = re.compile(r"\b[A-Z][\w'-]*")
_IDENTIFIER = None


def _identifier():
    global _IDENTIFIER
    if _IDENTIFIER is None:
        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language."""
    lang, prob = _identifier().classify(text[:_MESSAGE_CHARS])
    return str(lang), float(prob)


def identify_with_margin(text: str, targets: frozenset[str]) -> tuple[str, float, float]:
    """(top language, its probability, its margin over the most likely target language)."""
    ranked = _identifier().rank(text[:_SAMPLE_CHARS])
    lang, prob = ranked[0]
    target_prob = max((p for code, p in ranked if code in targets), default=0.0)
    return str(lang), float(prob), float(prob - target_prob) if lang not in targets else 0.0


def _sample(proses: list[str]) -> str:
    """Up to _SAMPLE_CHARS of prose with a fair share from every message (not just the first)."""
    share = max(200, _SAMPLE_CHARS // max(1, len(proses)))
    return "\n".join(p[:share] for p in proses)[:_SAMPLE_CHARS]


class _Verdict:
    """What the filter concluded about one record (None-like when it is kept as too short)."""

    __slots__ = ("lang", "prob", "remove", "detail")

    def __init__(self, lang: str, prob: float, remove: bool, detail: str = ""):
        self.lang, self.prob, self.remove, self.detail = lang, prob, remove, detail


def _message_is_target(text: str, targets: frozenset[str], min_chars: int) -> bool | None:
    """Is this message's prose in a target language? None when too short to tell."""
    if letters(text) < min_chars:
        return None
    lang, _ = identify(text)
    if lang in targets:
        return True
    without_names = _CAPITALIZED.sub(" ", text)
    if letters(without_names) >= min_chars and identify(without_names)[0] in targets:
        return True
    return False


def _side_share(items: list[tuple[str, bool | None]]) -> float | None:
    """Letter-weighted share of a side's prose that is in a target language (None: nothing identifiable)."""
    total = target = 0
    for text, is_target in items:
        if is_target is None:
            continue
        n = letters(text)
        total += n
        target += n if is_target else 0
    return target / total if total else None


def judge(messages: list[dict[str, str]], targets: frozenset[str], cfg: LanguageConfig) -> _Verdict | None:
    proses = [prose(m["content"][:_PROSE_CHARS]) for m in messages if m["role"] != "system"]
    proses = [p for p in proses if p.strip()]
    joined_letters = sum(letters(p) for p in proses)
    if joined_letters < cfg.min_chars:
        return None
    lang, prob, margin = identify_with_margin(_sample(proses), targets)
    if lang in targets or prob < cfg.min_confidence or margin < cfg.min_margin:
        return _Verdict(lang, prob, False)
    # A suspect: confirm side by side, message by message, weighted by letters.
    sides: dict[str, list[tuple[str, bool | None]]] = {"user": [], "assistant": []}
    for m in messages:
        if m["role"] in sides:
            text = prose(m["content"][:_PROSE_CHARS])
            sides[m["role"]].append((text, _message_is_target(text, targets, cfg.min_chars)))
    shares = {side: _side_share(items) for side, items in sides.items()}
    known = {side: share for side, share in shares.items() if share is not None}
    remove = bool(known) and all(share < 0.5 for share in known.values())
    detail = f"prose identified as {lang} (p={prob:.2f}, margin {margin:.2f}); " + ", ".join(
        f"{side} {100 * (1 - share):.0f}% not {'/'.join(sorted(targets))} by letters" for side, share in known.items()
    )
    return _Verdict(lang, prob, remove, detail)


def _identify_chunk(args: tuple[list[list[dict[str, str]]], frozenset[str], dict]) -> list[_Verdict | None]:
    conversations, targets, cfg_dict = args
    cfg = LanguageConfig.model_validate(cfg_dict)
    return [judge(messages, targets, cfg) for messages in conversations]


def _view(record: Record, field: str) -> list[dict[str, str]]:
    """The messages a field setting asks to identify (text: all of them)."""
    if field == "response":
        return [record.messages[record.last_assistant_index]]
    if field == "prompt":
        return record.messages[: record.last_assistant_index]
    return record.messages


class LanguageFilter(Step):
    config_class = LanguageConfig
    reasons = ("wrong_language",)
    rules = {"wrong_language": Rule("wrong_language", "record", DROP,
                                    "the prose of the conversation is not in a target language")}

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        if not cfg.languages:
            return StepResult(list(records), [])
        targets = frozenset(lang.lower() for lang in cfg.languages)
        cfg_dict = cfg.model_dump()
        # Chunks built lazily as workers take them (curate.parallel): few exist at a time.
        chunks = (([_view(r, cfg.field) for r in c], targets, cfg_dict) for c in chunked(records, 2000))
        with context.progress.task("language ID", len(records)) as task:
            parts = list(parallel_imap(_identify_chunk, chunks, context.workers, task, lambda chunk: len(chunk[0])))
        verdicts = (v for part in parts for v in part)
        kept, removed = [], []
        languages: dict[str, int] = {}
        for record, verdict in zip(records, verdicts):
            if verdict is None:
                kept.append(record)
                languages["(too short)"] = languages.get("(too short)", 0) + 1
                continue
            languages[verdict.lang] = languages.get(verdict.lang, 0) + 1
            if verdict.remove:
                removed.append(Removal(record, "wrong_language", verdict.detail))
            else:
                kept.append(record)
        top = dict(sorted(languages.items(), key=lambda kv: -kv[1])[:10])
        return StepResult(kept, removed, {"languages": top})
