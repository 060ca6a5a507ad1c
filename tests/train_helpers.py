"""Shared builders for the train tests: synthetic records, a run dir with curated data, configs."""
from __future__ import annotations

import json
from pathlib import Path

from curatune.config import validate_config
from curatune.records import Record, records_to_frame
from curatune.rundir import RunDir, atomic_write_parquet

CATEGORIES = ("shoes", "shirts", "bags")


def make_records(n: int, categories=CATEGORIES, skew: bool = False) -> list[Record]:
    """``n`` distinct short extraction records; with ``skew`` the first category dominates."""
    records = []
    for i in range(n):
        if skew:
            category = categories[0] if i % 4 else categories[1 + (i // 4) % (len(categories) - 1)]
        else:
            category = categories[i % len(categories)] if categories else None
        records.append(Record.make(
            [{"role": "user", "content": f"Extract the brand from: Acme {category} item {i} in red"},
             {"role": "assistant", "content": json.dumps({"brand": "Acme", "item": i})}],
            category=category, source="synthetic",
        ))
    return records


def curated_run_dir(root: Path, records: list[Record]) -> RunDir:
    run_dir = RunDir(root)
    atomic_write_parquet(run_dir.kept, records_to_frame(records))
    return run_dir


def tiny_config(run_dir: RunDir, model_dir: Path, **train):
    settings = {"sizes": [4, 8], "methods": ["lora", "full"], "epochs": 1, "per_device_batch_size": 2,
                "max_seq_length": 64, "cpu_threads": 1}
    settings.update(train)
    heldout = settings.pop("heldout_size", 6)
    return validate_config({
        "run_dir": str(run_dir.root),
        "model": {"base": str(model_dir)},
        "data": {"heldout_size": heldout},
        "train": settings,
    })
