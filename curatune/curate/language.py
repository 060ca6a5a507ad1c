"""Language filter with offline language ID (py3langid, a numpy port of langid.py)."""
from __future__ import annotations

import re

from py3langid.langid import MODEL_FILE, LanguageIdentifier

from curatune.curate.base import (
    CurateContext,
    Removal,
    Step,
    StepResult,
    chunked,
    text_of,
)
from curatune.curate.config import LanguageConfig
from curatune.curate.parallel import parallel_map
from curatune.records import Record

# Language ID converges long before this; truncating keeps long records cheap.
_MAX_CHARS = 1500
# Capitalized words: mostly names, which mislead character n-gram language ID (English
# sentences about "Quintus Caecilius Metellus" come out as Latin).
_CAPITALIZED = re.compile(r"\b[A-Z][\w'-]*")
_IDENTIFIER = None


def _identifier():
    global _IDENTIFIER
    if _IDENTIFIER is None:
        _IDENTIFIER = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    return _IDENTIFIER


def identify(text: str) -> tuple[str, float]:
    """(ISO 639-1 code, probability) of the most likely language."""
    lang, prob = _identifier().classify(text[:_MAX_CHARS])
    return str(lang), float(prob)


def _letters(text: str) -> int:
    return sum(1 for ch in text[:_MAX_CHARS] if ch.isalpha())


def _identify_chunk(args: tuple[list[str], int, frozenset[str], float]) -> list[tuple[str, float, bool] | None]:
    """(language, probability, remove?) per text; None when too short to identify."""
    texts, min_chars, targets, min_confidence = args
    out: list[tuple[str, float, bool] | None] = []
    for text in texts:
        if _letters(text) < min_chars:
            out.append(None)
            continue
        lang, prob = identify(text)
        remove = lang not in targets and prob >= min_confidence
        if remove:
            # Confirm on the text without capitalized words (names); only for the few suspects.
            lowered = _CAPITALIZED.sub(" ", text[: _MAX_CHARS * 2])
            remove = _letters(lowered) < min_chars or identify(lowered)[0] not in targets
        out.append((lang, prob, remove))
    return out


class LanguageFilter(Step):
    config_class = LanguageConfig
    reasons = ("wrong_language",)

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        if not cfg.languages:
            return StepResult(list(records), [])
        targets = {lang.lower() for lang in cfg.languages}
        chunks = [([text_of(r, cfg.field) for r in c], cfg.min_chars, frozenset(targets), cfg.min_confidence)
                  for c in chunked(records, 2000)]
        with context.progress.task("language ID", len(records)) as task:
            parts = parallel_map(_identify_chunk, chunks, context.workers, task, [len(c[0]) for c in chunks])
        guesses = [g for part in parts for g in part]
        kept, removed = [], []
        languages: dict[str, int] = {}
        for record, guess in zip(records, guesses):
            if guess is None:
                kept.append(record)
                languages["(too short)"] = languages.get("(too short)", 0) + 1
                continue
            lang, prob, remove = guess
            languages[lang] = languages.get(lang, 0) + 1
            # Only a confident non-target guess removes (short or mixed text gets weak guesses),
            # and only when the text without its capitalized words (names) agrees it is not a target.
            if remove:
                removed.append(Removal(record, "wrong_language", f"identified as {lang} (p={prob:.2f})"))
            else:
                kept.append(record)
        top = dict(sorted(languages.items(), key=lambda kv: -kv[1])[:10])
        return StepResult(kept, removed, {"languages": top})
