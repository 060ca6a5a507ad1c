"""The validation split: records carved from the training pool to pick a learning rate on.

How it is drawn (and why):

1. After the held-out split is removed (``train/heldout.parquet``; the test split is never
   touched), ``train.validation_size`` records are carved from what is left with
   ``train.validation_seed``: the pool is put in canonical (id) order and seeded-shuffled,
   stratified by category like the held-out carve (``subsets.carve_heldout``), and the first
   ``validation_size`` records are the validation split.
2. Every record whose id is in the split is then removed from the training pool (and, with a
   paired draw, from the raw pool), *before* any subset is drawn, so no subset of any size or
   seed can hold a validation record.
3. Once written, ``train/validation.parquet`` is reused as is (like the held-out split), so a
   resumed or extended sweep cannot carve differently.

Each cell then records its mean per-token loss on the split (``validation_loss`` in done.json):
the number the learning-rate selection (``curatune.evaluate.analysis.lr_selection``) compares.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from curatune.chat_format import IGNORE_INDEX, PaddingCollator, encode
from curatune.errors import DataError
from curatune.records import Record, frame_to_records, records_to_frame
from curatune.runcheck import read_run_parquet
from curatune.rundir import RunDir, atomic_write_parquet
from curatune.train.subsets import carve_heldout


@dataclass
class ValidationSplit:
    pool: list[Record]  # the training pool without the validation records
    validation: list[Record]
    note: str | None = None


def carve_validation(pool: list[Record], size: int, seed: int, stratify: bool,
                     existing: list[Record] | None = None) -> ValidationSplit:
    """Remove ``size`` seeded records (or the ``existing`` split's ids) from the pool."""
    if existing is not None:
        ids = {r.id for r in existing}
        note = None
        if len(existing) != size:
            note = (f"train/validation.parquet exists with {len(existing)} records; train.validation_size = "
                    f"{size} is ignored (remove the file to carve again)")
        return ValidationSplit([r for r in pool if r.id not in ids], list(existing), note)
    if size == 0:
        return ValidationSplit(list(pool), [])
    if size >= len(pool):
        raise DataError(
            f"train.validation_size = {size} but the training pool (held-out removed) has only {len(pool)} "
            "records; lower train.validation_size"
        )
    rest, validation = carve_heldout(pool, size, seed, stratify)
    ids = {r.id for r in validation}
    # identical raw records share an id: drop every copy, so no copy of a validation record is trained on
    return ValidationSplit([r for r in rest if r.id not in ids], validation)


def read_validation(run_dir: RunDir) -> list[Record] | None:
    if not run_dir.validation.exists():
        return None
    return frame_to_records(read_run_parquet(run_dir.validation))


def write_validation(run_dir: RunDir, records: list[Record]) -> None:
    atomic_write_parquet(run_dir.validation, records_to_frame(records))


def validation_loss(model, tokenizer, records: list[Record], max_length: int, batch_size: int) -> dict:
    """Mean per-token cross-entropy of ``model`` on the answer tokens of ``records`` (the tokens a
    cell trains on), weighted by tokens over the whole split, as ``{"loss", "tokens", "records"}``."""
    import torch  # heavy: only the sweep (which has it loaded) computes validation losses

    encoded = [encode(tokenizer, r, max_length) for r in records]
    examples = [{"input_ids": e.input_ids, "labels": e.labels} for e in encoded
                if any(label != IGNORE_INDEX for label in e.labels[1:])]
    if not examples:
        return {"loss": None, "tokens": 0, "records": 0}
    collate = PaddingCollator(tokenizer.pad_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    total, tokens = 0.0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = {k: v.to(device) for k, v in collate(examples[start:start + batch_size]).items()}
            logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            shifted = batch["labels"][:, 1:]
            losses = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.shape[-1]), shifted.reshape(-1),
                ignore_index=IGNORE_INDEX, reduction="sum")
            total += float(losses)
            tokens += int((shifted != IGNORE_INDEX).sum())
    if was_training:
        model.train()
    loss = total / tokens if tokens else None
    return {"loss": round(loss, 6) if loss is not None and math.isfinite(loss) else loss,
            "tokens": tokens, "records": len(examples)}
