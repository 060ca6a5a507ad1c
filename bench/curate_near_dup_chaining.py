"""Near-duplicate clusters that chain: union-find (chain: true) vs the kept-representative rule.

    nice python bench/curate_near_dup_chaining.py                       # run both, write results
    nice python bench/curate_near_dup_chaining.py --dump /tmp/nd.txt    # also print the hand-check sample

On GPTeacher Toolformer (../shared/data, 7,673 records) the default pipeline runs twice, once
with ``near_dup`` chain: true (plain union-find, the behaviour before) and once with the
default chain: false. For each: records before/after, near_dup removals, and the similarity of
every removed record to the record kept for it: curatune's estimated Jaccard (the ledger's
detail) and, as the reference, the exact Jaccard of the two records' word 5-gram shingle sets
(``curatune.curate.text.shingle_set``, the same shingles the MinHash signs).

The hand-check samples (default pipeline): the 15 removals under chain: false whose
sha256("near:" + id) is smallest (seeded, stable), labelled right when the record is a copy of
the record kept for it; and the 10 records that chain: true removed but chain: false keeps
("rescued"), labelled right when keeping them is right (they are not a copy of the record
chain: true removed them against); and the same 10 for near_dup alone without the answer check. Labels (ids and verdicts, no text) are in
bench/labels/gpteacher_toolformer_near_dup.jsonl; the script reports both counts.
Writes bench/results/curate_near_dup_chaining.md and .json.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from curatune.config import validate_config  # noqa: E402
from curatune.curate.near_clusters import SIMILARITY_BINS  # noqa: E402
from curatune.curate.stage import run_curate  # noqa: E402
from curatune.curate.text import jaccard, shingle_set  # noqa: E402
from curatune.records import Record  # noqa: E402
from curatune.rundir import RunDir  # noqa: E402

TOOLFORMER = ROOT.parent / "shared" / "data" / "instruct" / "gpteacher" / "Toolformer"
LABELS = ROOT / "bench" / "labels" / "gpteacher_toolformer_near_dup.jsonl"
RESULTS = ROOT / "bench" / "results"
SAMPLE = 15


#: The default pipeline, and near_dup alone on the raw file without the answer-agreement check
#: (the setting closest to the issue's report: union-find on text similarity only).
SETUPS = {
    "default pipeline": lambda chain: [{"name": "quality"}, {"name": "language"}, {"name": "exact"},
                                       {"name": "near_dup", "chain": chain}, {"name": "decontaminate"}],
    "near_dup alone, response_threshold 0": lambda chain: [
        {"name": "near_dup", "chain": chain, "response_threshold": 0.0}],
}


def run(setup: str, chain: bool, run_dir: Path) -> dict:
    cfg = validate_config({
        "run_dir": str(run_dir), "data": {"sources": [{"path": str(TOOLFORMER)}]},
        "curate": {"workers": 2, "progress": False, "steps": SETUPS[setup](chain)},
    })
    load, t0 = os.getloadavg()[0], time.perf_counter()
    report = run_curate(cfg, RunDir(cfg.run_dir), force=True)
    seconds = time.perf_counter() - t0
    removed = pd.read_parquet(run_dir / "curate" / "removed.parquet")
    near = removed[removed["reason"] == "near_duplicate"].reset_index(drop=True)
    kept = pd.read_parquet(run_dir / "curate" / "kept.parquet")
    # The kept record of each removal: in kept.parquet (the near_dup step keeps it, and no later step drops it
    # here) or, when a later step removed it, in the ledger.
    by_id = {r["id"]: Record.from_row(r) for r in pd.concat([kept, removed]).to_dict("records") if len(r["messages"])}
    estimated = near["detail"].str.extract(r"estimated Jaccard ([0-9.]+)")[0].astype(float).to_numpy()
    exact = np.array([
        jaccard(shingle_set(Record.from_row(r).text, 5), shingle_set(by_id[r["duplicate_of"]].text, 5))
        for r in near.to_dict("records")
    ])
    step = next(s for s in report["steps"] if s["name"] == "near_dup")
    sizes = near.groupby("cluster_id").size() + 1
    return {
        "setup": setup, "chain": chain, "input_records": report["input_records"], "kept": report["kept"],
        "removed": report["removed"], "near_dup_in": step["input"], "near_dup_removed": int(len(near)),
        "largest_cluster": int(sizes.max()) if len(sizes) else 0, "clusters": int(len(sizes)),
        "counters": step.get("counters", {}),
        "estimated": _distribution(estimated), "exact": _distribution(exact),
        "estimated_minus_exact_abs_mean": round(float(np.abs(estimated - exact).mean()), 4) if len(near) else None,
        "seconds": round(seconds, 1), "load_before": round(load, 2),
        "_near": near.assign(estimated=estimated, exact=exact), "_by_id": by_id,
    }


def _distribution(values: np.ndarray) -> dict:
    counts, _ = np.histogram(values, bins=SIMILARITY_BINS)
    return {
        "bins": {f"{lo:.1f}-{hi:.1f}": int(c) for lo, hi, c in zip(SIMILARITY_BINS, SIMILARITY_BINS[1:], counts)},
        "below_0.7": int((values < 0.7).sum()), "min": round(float(values.min()), 3) if len(values) else None,
        "median": round(float(np.median(values)), 3) if len(values) else None,
    }


def sample(near: pd.DataFrame, n: int = SAMPLE) -> pd.DataFrame:
    keys = near["id"].map(lambda rid: hashlib.sha256(f"near:{rid}".encode()).hexdigest())
    return near.assign(_key=keys.values).sort_values("_key").head(n)


def rescued(old: dict, new: dict) -> pd.DataFrame:
    """Records chain: true removed as near-duplicates that chain: false keeps."""
    kept_now = set(new["_by_id"]) - set(new["_near"]["id"])
    near = old["_near"]
    return near[near["id"].isin(kept_now)]


def dump(rows: pd.DataFrame, by_id: dict, path: Path) -> None:
    lines = []
    for r in rows.to_dict("records"):
        removed, kept = Record.from_row(r), by_id[r["duplicate_of"]]
        lines.append(f"######## id {r['id']} -> kept {r['duplicate_of']} | est {r['estimated']:.2f} exact {r['exact']:.2f}")
        for name, rec in (("REMOVED", removed), ("KEPT", kept)):
            lines.append(f"--- {name}")
            lines += [f"[{m['role']}] {m['content']}" for m in rec.messages]
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def labelled_precision(rows: pd.DataFrame, reason: str) -> dict | None:
    if not LABELS.exists():
        return None
    labels = {d["id"]: d for d in map(json.loads, LABELS.read_text().splitlines()) if d.get("reason") == reason}
    verdicts = [labels[i]["verdict"] for i in rows["id"] if i in labels]
    right = sum(v == "right" for v in verdicts)
    return {"sampled": int(len(rows)), "labelled": len(verdicts), "right": right,
            "missing_labels": [i for i in rows["id"] if i not in labels]}


def markdown(results: list[dict], check: dict | None, check_rescued: dict | None,
             check_text_only: dict | None) -> str:
    out = ["# Near-duplicate clusters that chain (GPTeacher Toolformer)", "",
           "`gpteacher/Toolformer` (7,673 records), threshold 0.7, in two setups: the default pipeline (quality, "
           "language, exact, near_dup, decontaminate) and near_dup alone with `response_threshold: 0` (text "
           "similarity only, as in the issue's report). Each once with `chain: true` (union-find, the old "
           "behaviour) and once with the default `chain: false` (removed only when within the threshold of the "
           "kept representative). Machine load (1-minute average) is recorded per run: the machine is shared. "
           "Similarity of each removed record to the record kept for it: estimated Jaccard "
           "(128-permutation MinHash, the ledger's detail) and exact Jaccard of the word 5-gram shingle sets "
           "(the reference).", "",
           "| setup | near_dup | records in | kept | removed (all steps) | near_dup removed | below 0.7 (exact) | exact min | exact median | largest cluster | split components | seconds | load |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        out.append(
            f"| {r['setup']} | chain: {str(r['chain']).lower()} | {r['input_records']} | {r['kept']} | {r['removed']} | "
            f"{r['near_dup_removed']} | {r['exact']['below_0.7']} | {r['exact']['min']} | {r['exact']['median']} | "
            f"{r['largest_cluster']} | {r['counters'].get('split_components', '-')} | {r['seconds']} | {r['load_before']} |"
        )
    out += ["", "Removed records per similarity to the record kept (exact 5-gram Jaccard / estimated):", "",
            "| setup | near_dup | " + " | ".join(results[0]["exact"]["bins"]) + " |",
            "|---|---|" + "---:|" * len(results[0]["exact"]["bins"])]
    for r in results:
        cells = [f"{r['exact']['bins'][k]} / {r['estimated']['bins'][k]}" for k in r["exact"]["bins"]]
        out.append(f"| {r['setup']} | chain: {str(r['chain']).lower()} | " + " | ".join(cells) + " |")
    out += ["", "Mean |estimated - exact|: " + ", ".join(
        f"{r['setup']} chain {str(r['chain']).lower()} {r['estimated_minus_exact_abs_mean']}" for r in results) + "."]
    if check:
        out += ["", f"Hand check of {check['sampled']} seeded removals of the default pipeline under chain: false "
                f"(bench/labels/gpteacher_toolformer_near_dup.jsonl): {check['right']} of {check['labelled']} "
                "labelled right (a copy of the kept record as far as training is concerned)."]
    if check_rescued:
        out += ["", f"Hand check of {check_rescued['sampled']} seeded records that chain: true removed and chain: false "
                f"keeps: {check_rescued['right']} of {check_rescued['labelled']} labelled right to keep (not a copy of "
                "the record chain: true removed them against)."]
    if check_text_only:
        out += ["", f"The same for near_dup alone (response_threshold 0): {check_text_only['right']} of "
                f"{check_text_only['labelled']} of {check_text_only['sampled']} rescued records labelled right to keep."]
    return "\n".join(out) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--dump", type=Path)
    args = parser.parse_args()
    if not TOOLFORMER.exists():
        sys.exit(f"needs {TOOLFORMER} (see /work/shared/DATA.md)")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, setup in enumerate(SETUPS):
            for chain in (True, False):
                results.append(run(setup, chain, Path(tmp) / f"{i}_chain_{chain}"))
    old, new = results[0], results[1]
    rows = sample(new["_near"])
    saved = sample(rescued(old, new), 10)
    saved_text_only = sample(rescued(results[2], results[3]), 10)
    if args.dump:
        dump(rows, new["_by_id"], args.dump)
        dump(saved, old["_by_id"], args.dump.with_suffix(".rescued.txt"))
        dump(saved_text_only, results[2]["_by_id"], args.dump.with_suffix(".rescued_text_only.txt"))
    check, check_rescued = labelled_precision(rows, "near_duplicate"), labelled_precision(saved, "rescued")
    check_text_only = labelled_precision(saved_text_only, "rescued_text_only")
    public = [{k: v for k, v in r.items() if not k.startswith("_")} for r in results]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "curate_near_dup_chaining.json").write_text(json.dumps(
        {"runs": public, "hand_check": check, "sample_ids": list(rows["id"]), "hand_check_rescued": check_rescued,
         "rescued_sample_ids": list(saved["id"]), "hand_check_rescued_text_only": check_text_only,
         "rescued_text_only_sample_ids": list(saved_text_only["id"])}, indent=1) + "\n")
    (RESULTS / "curate_near_dup_chaining.md").write_text(markdown(public, check, check_rescued, check_text_only))
    print(markdown(public, check, check_rescued, check_text_only))


if __name__ == "__main__":
    main()
