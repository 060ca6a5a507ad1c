"""Labelled texts for few-shot classification: ``data.sources`` read into (id, text, label) rows.

Files are read by the instruction-data readers (:mod:`curatune.data.loaders`: JSONL, JSON, CSV,
TSV, Parquet, compressed, folders and globs); this module only says which field is the text and
which the label, and checks that the label field looks like one.

Prompt-template files (prompt/completion, e.g. the T0 templates of self-instruct, one template
per file) hold the text inside an instruction that every row of the file shares; with
``strip_template`` the shared start and end are cut off, so ``"Title: X\\nIs the review positive
or negative?\\n"`` becomes ``"X"``. Every row is either kept or rejected with a reason
(``rows_in == kept + rejected``).
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from curatune.classify.config import ClassifyConfig
from curatune.config import SourceConfig
from curatune.data.loaders import check_accounting, expand_path, read_file
from curatune.errors import DataError

#: Field names tried, in order, when classify.text_field / label_field are unset.
TEXT_FIELDS = ("text", "sentence", "review", "content", "document", "question", "utterance", "tweet", "prompt", "input")
LABEL_FIELDS = ("label", "labels", "class", "category", "target", "sentiment", "intent", "completion", "output")
#: End-of-text markers that prompt/completion files append to the completion.
END_MARKERS = ("<|endoftext|>", "</s>", "<|im_end|>", "<|eot_id|>")
#: Files with fewer rows than this are not stripped unless classify.strip_template is true: in a
#: handful of rows a shared opening word ("The ...") cannot be told apart from the template.
MIN_TEMPLATE_ROWS = 20
#: A label field with more distinct values than this share of its rows is free text, not labels.
MAX_LABEL_SHARE = 0.5

RECORD_COLUMNS = ["id", "text", "label", "source"]


@dataclass
class LabelledData:
    """Kept rows (RECORD_COLUMNS) and the rejected ones (position, reason), with the fields used."""

    records: pd.DataFrame
    rejected: list[dict[str, str]] = field(default_factory=list)
    fields: dict[str, dict[str, str]] = field(default_factory=dict)  # file -> {"text", "label", "template"}

    @property
    def classes(self) -> list[str]:
        return sorted(self.records["label"].unique())

    def counts(self) -> dict[str, int]:
        return {str(k): int(v) for k, v in self.records["label"].value_counts().sort_index().items()}


def clean_label(value: object) -> str:
    text = str(value).strip()
    for marker in END_MARKERS:
        text = text.removesuffix(marker).strip()
    return text


def shared_template(texts: list[str]) -> tuple[str, str]:
    """(prefix, suffix) every text shares, cut back to whitespace boundaries so that a shared
    start of a word (``Re`` of ``Review``/``Returned``) stays with the text."""
    if len(texts) < 2:
        return "", ""
    prefix = os.path.commonprefix(texts)
    if prefix and not prefix[-1].isspace():
        cut = max(prefix.rfind(c) for c in (" ", "\n", "\t"))
        prefix = prefix[: cut + 1] if cut >= 0 else ""
    suffix = os.path.commonprefix([t[len(prefix):][::-1] for t in texts])[::-1]
    if suffix and not suffix[0].isspace():
        starts = [i for i, c in enumerate(suffix) if c.isspace()]
        suffix = suffix[starts[0]:] if starts else ""
    return prefix, suffix


def _pick(keys: list[str], wanted: str | None, candidates: tuple[str, ...], what: str, where: str) -> str:
    if wanted is not None:
        if wanted not in keys:
            raise DataError(f"{where}: no field {wanted!r} for the {what} (fields: {', '.join(keys)})")
        return wanted
    lower = {k.lower(): k for k in keys}
    for name in candidates:
        if name in lower:
            return lower[name]
    raise DataError(f"{where}: no {what} field found among {', '.join(keys)}; set classify.{what}_field "
                    f"(tried {', '.join(candidates)})")


def load_labelled(sources: list[SourceConfig], config: ClassifyConfig) -> LabelledData:
    """Read every source into labelled rows; a problem names the file, row and field."""
    if not sources:
        raise DataError("data.sources is empty: a classification run needs labelled texts")
    frames, rejected, fields = [], [], {}
    for source in sources:
        files, _ = expand_path(source.path)
        for path in files:
            frame, dropped, used = _load_file(path, source, config)
            frames.append(frame)
            rejected += dropped
            fields[path] = used
    records = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=RECORD_COLUMNS)
    records, repeats = _drop_repeated_texts(records)
    data = LabelledData(records, rejected + repeats, fields)
    if records.empty:
        raise DataError(f"no labelled rows in {', '.join(s.path for s in sources)} ({len(rejected)} rejected)")
    _check_labels(data)
    return data


def _load_file(path: str, source: SourceConfig, config: ClassifyConfig) -> tuple[pd.DataFrame, list[dict], dict]:
    read = read_file(path, source.encoding)
    rows = [r for r in read.rows if r.error is None and isinstance(r.value, dict)]
    rejected = [{"position": r.position, "reason": r.error[0] if r.error else "not_an_object"}
                for r in read.rows if r.error is not None or not isinstance(r.value, dict)]
    if not rows:
        return pd.DataFrame(columns=RECORD_COLUMNS), rejected, {}
    keys = list(dict.fromkeys(k for r in rows[:100] for k in r.value))
    text_key = _pick(keys, source.mapping.get("text") or config.text_field, TEXT_FIELDS, "text", path)
    label_key = _pick(keys, source.mapping.get("label") or config.label_field, LABEL_FIELDS, "label", path)
    if config.strip_template is None:
        strip = {"prompt", "completion"} <= set(keys) and len(rows) >= MIN_TEMPLATE_ROWS
    else:
        strip = config.strip_template
    kept = []
    for row in rows:
        text, label = row.value.get(text_key), row.value.get(label_key)
        if text is None or not str(text).strip():
            rejected.append({"position": row.position, "reason": f"empty_text ({text_key})"})
        elif label is None or not clean_label(label):
            rejected.append({"position": row.position, "reason": f"empty_label ({label_key})"})
        else:
            kept.append((row.position, str(text), clean_label(label)))
    prefix, suffix = shared_template([t for _, t, _ in kept]) if strip else ("", "")
    records = []
    for position, text, label in kept:
        body = text[len(prefix): len(text) - len(suffix)].strip()
        if not body:
            rejected.append({"position": position, "reason": "empty_text (nothing left after the template)"})
            continue
        records.append({"id": position, "text": re.sub(r"\s+", " ", body), "label": label, "source": Path(path).name})
    check_accounting(len(read.rows), len(records), len(rejected), path)
    used = {"text": text_key, "label": label_key, "template_prefix": prefix, "template_suffix": suffix}
    return pd.DataFrame(records, columns=RECORD_COLUMNS), rejected, used


def _drop_repeated_texts(records: pd.DataFrame) -> tuple[pd.DataFrame, list[dict]]:
    """A text seen twice (several templates of one dataset) would leak from training into the
    test split: keep its first row; a text with two different labels is dropped altogether."""
    labels_per_text = records.groupby("text")["label"].transform("nunique")
    conflicting = labels_per_text > 1
    repeated = records["text"].duplicated() & ~conflicting
    rejected = [{"position": p, "reason": "conflicting_labels"} for p in records.loc[conflicting, "id"]]
    rejected += [{"position": p, "reason": "repeated_text"} for p in records.loc[repeated, "id"]]
    return records[~conflicting & ~repeated].reset_index(drop=True), rejected


def _check_labels(data: LabelledData) -> None:
    labels = data.records["label"]
    n_labels = labels.nunique()
    if n_labels < 2:
        raise DataError(f"the label field holds a single value ({labels.iloc[0]!r}) in all {len(labels)} rows: "
                        "nothing to classify (pick another file or classify.label_field)")
    if n_labels > max(20, MAX_LABEL_SHARE * len(labels)):
        example = ", ".join(repr(v[:30]) for v in labels.unique()[:3])
        raise DataError(f"the label field has {n_labels} distinct values in {len(labels)} rows ({example}, ...): "
                        "free text, not labels; set classify.label_field")
    duplicated = data.records["id"].duplicated()
    if duplicated.any():
        raise DataError(f"row {data.records['id'][duplicated].iloc[0]} is read twice (a source listed twice?)")
