"""Tabulate the paired curated-vs-raw ablation of examples/demo-ablation.

    python examples/demo-ablation/collect.py runs/demo-ablation-curated runs/demo-ablation-raw

Prints, as Markdown:

1. `curatune compare-runs CURATED RAW` per size: field-F1 and the retention KL of the curated
   and raw cells (3 seeds pooled, items paired), raw - curated with its interval, adjusted
   p-value and label, each seed's own difference, and the records the two subsets differ in;
2. the task difference split by held-out item: the items whose text curation found in the raw
   training records (decontamination's removals name them) against all others, since a raw
   subset holding a test item's answer scores that item from memory.
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from curatune.evaluate.compare import (  # noqa: E402
    compare_runs,
    differing_records,
    interval_text,
    per_seed_text,
)
from curatune.rundir import RunDir  # noqa: E402

#: decontaminate's ledger detail in ledgers from before the eval_item column:
#: "...overlap with eval item <path>:<line>:<id>:<field>"
LEAKED_ITEM = re.compile(r"eval item .*:(\d+):([0-9a-f]+):\w+$")


def comparison_table(result: dict) -> list[str]:
    lines = ["| size | suite | metric | curated | raw | raw − curated [95% CI] | per seed | p adj. | verdict for raw "
             "| records differing (per seed) |", "|---:|---|---|---:|---:|---|---|---:|---|---|"]
    for e in result["entries"]:
        p = "—" if e["p_adjusted"] is None else f"{e['p_adjusted']:.3g}"
        lines.append(f"| {e['size']} | {e['suite']} | {e['metric']} | {e['value_a']:.3g} | {e['value_b']:.3g} | "
                     f"{interval_text(e)} | {per_seed_text(e)} | {p} | {e['label']} | {differing_records(result, e['size'], e['seeds'])} |")
    return lines


def leaked_ids(curated: RunDir) -> set[str]:
    """Ids of the held-out records that curation found in raw training records: the ledger's
    eval_item "<source>:<record id>:<field>", or its detail text in older ledgers."""
    removed = pd.read_parquet(curated.removed)
    contaminated = removed[removed["reason"] == "contaminated"]
    if "eval_item" in removed.columns and contaminated["eval_item"].notna().all():
        return {item.rsplit(":", 2)[1] for item in contaminated["eval_item"]}
    return {m.group(2) for m in map(LEAKED_ITEM.search, contaminated["detail"].astype(str)) if m}


def split_table(curated: RunDir, raw: RunDir, sizes: list[int], seeds: list[int]) -> list[str]:
    leaked = leaked_ids(curated)
    lines = ["| size | items | n | curated field-F1 | raw field-F1 | raw − curated |", "|---:|---|---:|---:|---:|---:|"]
    for size in sizes:
        frames = []
        for side, run in (("curated", curated), ("raw", raw)):
            for seed in seeds:
                path = run.sample_file("task", f"lora-n{size}-s{seed}", "final")
                if path.exists():
                    frame = pd.read_parquet(path, columns=["example_id", "field_f1"])
                    frames.append(frame.assign(side=side, seed=seed))
        if not frames:
            continue
        data = pd.concat(frames)
        data["leaked"] = data["example_id"].astype(str).isin(leaked)
        for is_leaked, name in ((True, "found in raw training records"), (False, "all others")):
            part = data[data["leaked"] == is_leaked]
            if part.empty:
                continue
            means = part.groupby("side")["field_f1"].mean()
            n = part["example_id"].nunique()
            lines.append(f"| {size} | {name} | {n} | {means['curated']:.3f} | {means['raw']:.3f} | "
                         f"{means['raw'] - means['curated']:+.3f} |")
    return lines


def main(curated_dir: str, raw_dir: str) -> None:
    result = compare_runs(curated_dir, raw_dir)
    print("\n".join(comparison_table(result)))
    for note in result["notes"]:
        print(f"\nnote: {note}")
    sizes = sorted({e["size"] for e in result["entries"]})
    seeds = sorted({s for e in result["entries"] for s in e["seeds"]})
    print()
    print("\n".join(split_table(RunDir(curated_dir), RunDir(raw_dir), sizes, seeds)))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
