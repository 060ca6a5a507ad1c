"""Plan a sweep: fix the data (pool, held-out split, nested subsets) and list the grid cells.

Everything written here is a pure function of the inputs and the config, except the
held-out split, which is reused once written (so a resumed sweep cannot carve anew).
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from curatune.config import ExperimentConfig, validate_config
from curatune.curate.turns import repair_empty_turns
from curatune.data.loaders import load_sources
from curatune.errors import ConfigError, DataError
from curatune.records import Record, frame_to_records, records_to_frame
from curatune.runcheck import read_run_parquet
from curatune.rundir import (
    CELL,
    DONE,
    CellSpec,
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    read_json,
)
from curatune.train.cell import fingerprint, fingerprint_diff
from curatune.train.subsets import (
    SubsetPlan,
    category_counts,
    make_split,
    read_heldout,
    write_heldout,
)
from curatune.train.validation import (
    carve_validation,
    read_validation,
    write_validation,
)


@dataclass
class SweepPlan:
    specs: list[CellSpec]  # every cell of the grid (sizes that fit the pool)
    subsets: SubsetPlan
    pool_size: int
    heldout_size: int
    oversized: list[int]
    notes: list[str] = field(default_factory=list)
    validation_size: int = 0

    def subset_ids(self, spec: CellSpec) -> list[str]:
        return [r.id for r in self.subsets.subset(spec.seed, spec.size)]


@dataclass
class RawRecords:
    """The raw sources' records as a ``train.data = raw`` run can train on them."""

    records: list[Record]
    repaired: int = 0  # records that lost the exchanges around an empty turn
    dropped: int = 0  # records with no complete exchange left after that

    @classmethod
    def load(cls, config: ExperimentConfig) -> "RawRecords":
        """Load the sources and repair empty turns exactly as curation's first pass does
        (curate/turns.py: the exchange of an empty assistant turn goes, and a record with no
        complete exchange left goes): an empty assistant turn is never a training target, and a
        raw run differs from a curated one by the rules, not by this."""
        raw = cls([])
        for record in load_sources(config.data.sources).records:
            repair = repair_empty_turns(record)
            if repair is None:
                raw.records.append(record)
            elif repair.record is None:
                raw.dropped += 1
            else:
                raw.records.append(repair.record)
                raw.repaired += 1
        return raw

    def note(self) -> str | None:
        if not (self.repaired or self.dropped):
            return None
        return (f"raw data: {self.repaired} records had empty turns and lost those exchanges, {self.dropped} "
                "had no complete exchange left and were left out (as curation's empty_turn repair does)")


def load_training_records(config: ExperimentConfig, run_dir: RunDir) -> tuple[list[Record], list[str]]:
    """The records the sweep draws from, and notes on what loading changed."""
    if config.train.data == "raw":
        if not config.data.sources:
            raise ConfigError("train.data = raw but data.sources is empty: list the training files")
        raw = RawRecords.load(config)
        return raw.records, [note] if (note := raw.note()) else []
    if not run_dir.kept.exists():
        raise DataError(
            f"{run_dir.kept} not found: run `curatune curate CONFIG` first, or set train.data = raw "
            "to train on the raw sources"
        )
    return frame_to_records(read_run_parquet(run_dir.kept)), []


def paired_raw_pool(config: ExperimentConfig, heldout: list[Record]) -> list[Record]:
    """The raw pool a ``train.data = raw`` run with the same held-out split draws from: the raw
    sources' records (empty turns repaired, as that run loads them) minus the held-out ones (by id)."""
    if not config.data.sources:
        raise ConfigError("train.draw = paired orders the curated records like the raw sources, but "
                          "data.sources is empty: list the raw training files")
    held = {r.id for r in heldout}
    return [r for r in RawRecords.load(config).records if r.id not in held]


def load_eval_records(config: ExperimentConfig) -> list[Record] | None:
    if not config.data.eval_sources:
        return None
    records = list(load_sources(config.data.eval_sources).records)
    if not records:
        raise DataError("data.eval_sources hold no usable record")
    return records


def plan_sweep(config: ExperimentConfig, run_dir: RunDir) -> SweepPlan:
    """Fix the split and subsets, write heldout/pool/subsets/plan; return the plan."""
    records, notes = load_training_records(config, run_dir)
    if not records:
        raise DataError("no training records (the curated set or the sources are empty)")
    existing = read_heldout(run_dir)
    if existing is not None:
        split = make_split(records, None, 0, config.train.heldout_seed, config.train.stratify, existing)
        if not config.data.eval_sources and len(existing) != config.data.heldout_size:
            notes.append(
                f"{run_dir.heldout} exists with {len(existing)} records; data.heldout_size = "
                f"{config.data.heldout_size} is ignored (remove the file to carve again)"
            )
    else:
        split = make_split(records, load_eval_records(config), config.data.heldout_size,
                           config.train.heldout_seed, config.train.stratify)
        write_heldout(run_dir, split.heldout)
    notes += split.notes
    if split.removed_from_pool and existing is None:
        notes.append(f"{split.removed_from_pool} training records are held-out records and were removed from the pool")
    if not split.pool:
        raise DataError("nothing left to train on after removing the held-out records")

    validation = carve_validation(split.pool, config.train.effective_validation_size(), config.train.validation_seed,
                                  config.train.stratify, read_validation(run_dir))
    if validation.validation and not run_dir.validation.exists():
        write_validation(run_dir, validation.validation)
    if validation.note:
        notes.append(validation.note)
    if not validation.pool:
        raise DataError("nothing left to train on after removing the held-out and validation records")
    validation_ids = {r.id for r in validation.validation}

    raw_pool = None
    if config.train.draw == "paired" and config.train.data == "curated":
        # the raw pool loses the same validation ids, so a raw run with this split stays paired
        raw_pool = [r for r in paired_raw_pool(config, split.heldout) if r.id not in validation_ids]
    subsets = SubsetPlan.build(validation.pool, config.train.seeds, config.train.sizes, config.train.stratify, raw_pool)
    if subsets.paired is not None and subsets.paired.not_in_raw:
        notes.append(
            f"paired draw: {subsets.paired.not_in_raw} curated records match no raw record by id (curation "
            "changed their text); they come after the raw order, so they count as differing records"
        )
    if not subsets.sizes:  # nothing would train: an error, not a sweep of "0/0 cells" that exits 0
        raise ConfigError(
            f"train.sizes {subsets.oversized}: every size exceeds the training pool of {len(validation.pool)} "
            f"records (curated records minus the held-out split); use sizes of at most {len(validation.pool)}"
        )
    if subsets.oversized:
        notes.append(
            f"sizes {subsets.oversized} exceed the training pool of {len(validation.pool)} records and are "
            "skipped (not capped)"
        )
    specs = grid_specs(config, subsets.sizes)
    plan = SweepPlan(specs, subsets, len(validation.pool), len(split.heldout), subsets.oversized, notes,
                     len(validation.validation))

    atomic_write_parquet(run_dir.pool, records_to_frame(subsets.pool))
    atomic_write_parquet(run_dir.subsets, subsets.frame())
    atomic_write_json(run_dir.sweep_config, config.resolved())
    atomic_write_json(run_dir.plan, {
        "cells": [
            {"method": s.method, "size": s.size, "seed": s.seed, "key": s.key,
             "path": str(s.path(run_dir).relative_to(run_dir.root)), **({"lr": s.lr} if s.lr is not None else {})}
            for s in specs
        ],
        "sizes": subsets.sizes,
        "seeds": config.train.seeds,
        "methods": config.train.methods,
        "pool_size": len(validation.pool),
        "heldout_size": len(split.heldout),
        "validation_size": len(validation.validation),
        "learning_rates": config.train.learning_rates,
        "oversized": subsets.oversized,
        "data": config.train.data,
        "draw": config.train.draw if config.train.data == "curated" else "raw order",
        "paired_draw": subsets.paired.summary(subsets.sizes) if subsets.paired is not None else None,
        "categories_pool": category_counts(validation.pool),
        "categories_heldout": category_counts(split.heldout),
        "notes": notes,
    })
    return plan


def grid_specs(config: ExperimentConfig, sizes: list[int]) -> list[CellSpec]:
    """Every cell of the grid: sizes x seeds x methods x each method's learning rates.

    Smallest sizes first, every method, rate and seed at a size before the next size: a sweep
    stopped half-way has comparable LoRA and full cells to evaluate, not one method only."""
    train = config.train
    return [CellSpec(m, n, s, lr) for n in sizes for s in train.seeds for m in train.methods
            for lr in train.grid_rates(m)]


def stale_cells(config: ExperimentConfig, run_dir: RunDir, plan: SweepPlan) -> list[str]:
    """Done cells whose recorded settings differ from the current config (one line each)."""
    problems = []
    for spec in plan.specs:
        cell_dir = spec.path(run_dir)
        if not (cell_dir / DONE).exists() or not (cell_dir / CELL).exists():
            continue
        try:
            stored = read_json(cell_dir / CELL).get("fingerprint") or {}
        except (OSError, json.JSONDecodeError):
            continue
        diff = fingerprint_diff(stored, fingerprint(config, spec, plan.subset_ids(spec)))
        if diff:
            problems.append(f"{spec.key}: " + "; ".join(diff))
    return problems


def read_sweep_config(run_dir: RunDir | Path):
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    return validate_config(read_json(run_dir.sweep_config), str(run_dir.sweep_config))
