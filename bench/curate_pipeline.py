"""Whole curation stage on the 55k self_instruct records, and semantic dedup on top.

    nice python bench/curate_pipeline.py            # default pipeline + semantic step
    nice python bench/curate_pipeline.py --demo     # also the demo dataset with semantic on

Part 1 runs `run_curate` with the default steps in their default order (quality,
language, exact, near_dup, decontaminate) on every file of t0_train_50k (category = template file name) and
records per-step seconds, wall and CPU time and the machine load (the machine is
shared). Part 2 runs the semantic step (MiniLM embeddings, k-means, cosine pairs) on the
records part 1 kept, with an empty embedding cache, then again with the warm cache.
Writes bench/results/curate_pipeline.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SI = ROOT.parent / "shared/data/instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template"
RESULTS = ROOT / "bench" / "results"


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--demo", action="store_true")
    parser.add_argument("--skip-semantic", action="store_true")
    parser.add_argument("--semantic-limit", type=int, default=0,
                        help="Embed only this many of the kept records (0 = all) and extrapolate the rest.")
    args = parser.parse_args()
    if not SI.exists():
        sys.exit(f"needs {SI}")
    import pandas as pd

    from curatune.config import validate_config
    from curatune.curate.base import CurateContext, RichProgress
    from curatune.curate.config import DEFAULT_STEPS, SemanticDedupConfig
    from curatune.curate.dedup import SemanticDedup
    from curatune.curate.stage import run_curate
    from curatune.records import frame_to_records
    from curatune.rundir import RunDir

    tmp = Path(tempfile.mkdtemp(prefix="curate-pipeline-bench-"))
    out: dict = {"machine": {"cpus": os.cpu_count()}, "self_instruct": {}}
    # The default steps, with evaluation texts to decontaminate against (252 self-instruct
    # user-oriented instructions + ARC-Easy), so that step does real work.
    eval_paths = [str(SI.parents[3] / "human_eval/user_oriented_instructions.jsonl"),
                  str(ROOT.parent / "shared/data/bench/mc/arc_easy.jsonl")]
    steps = [{"name": c.model_fields["name"].default} for c in DEFAULT_STEPS]  # in the default order
    steps = [dict(s, extra_paths=eval_paths) if s["name"] == "decontaminate" else s for s in steps]
    cfg = validate_config({"run_dir": str(tmp / "run"),
                           "data": {"sources": [{"path": str(SI), "category": "{file}"}]},
                           "curate": {"workers": 2, "cache_dir": str(tmp / "cache"), "steps": steps}})
    load0, c0, t0 = os.getloadavg()[0], cpu(), time.perf_counter()
    report = run_curate(cfg, RunDir(cfg.run_dir), force=True)
    wall = time.perf_counter() - t0
    out["self_instruct"]["default_pipeline"] = {
        "input_records": report["input_records"], "kept": report["kept"], "removed_by_reason": report["removed_by_reason"],
        "steps": [{k: s.get(k) for k in ("name", "input", "kept", "removed", "seconds", "records_per_second")} for s in report["steps"]],
        "wall_seconds_including_load": round(wall, 1), "cpu_seconds": round(cpu() - c0, 1),
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
        "peak_rss_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(out["self_instruct"]["default_pipeline"], indent=1), flush=True)

    previous = RESULTS / "curate_pipeline.json"
    if args.skip_semantic and previous.exists():
        # Keep the semantic measurement of an earlier run (it takes minutes); marked as such.
        old = json.loads(previous.read_text()).get("self_instruct", {}).get("semantic_after_default")
        if old:
            out["self_instruct"]["semantic_after_default"] = [{**run, "from_earlier_run": True} for run in old]
    if not args.skip_semantic:
        kept = frame_to_records(pd.read_parquet(RunDir(cfg.run_dir).kept))
        total_kept = len(kept)
        if args.semantic_limit:
            import random

            kept = random.Random(0).sample(kept, min(args.semantic_limit, len(kept)))
        step = SemanticDedup(SemanticDedupConfig())
        runs = []
        for label in ("cold cache", "warm cache"):
            context = CurateContext(workers=2, cache_dir=tmp / "cache")
            load0, c0, t0 = os.getloadavg()[0], cpu(), time.perf_counter()
            with RichProgress() as progress:
                context.progress = progress
                result = step.run(kept, context)
            runs.append({"cache": label, "input": len(kept), "removed": len(result.removed),
                         "seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(cpu() - c0, 1),
                         "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2),
                         "extrapolated_seconds_for_all_kept": round((time.perf_counter() - t0) * total_kept / len(kept), 1),
                         "all_kept": total_kept, **result.counters})
            print(runs[-1], flush=True)
        out["self_instruct"]["semantic_after_default"] = runs

    if args.demo:
        from curatune.data.demo import generate_demo_dataset

        paths = generate_demo_dataset(tmp / "demo", n_train=1200, n_heldout=50, seed=0)
        steps = [{"name": "exact"}, {"name": "quality"}, {"name": "language"}, {"name": "near_dup"},
                 {"name": "semantic"}, {"name": "decontaminate"}]
        dcfg = validate_config({"run_dir": str(tmp / "demo-run"), "data": {"sources": [{"path": str(paths.train)}]},
                                "curate": {"workers": 2, "cache_dir": str(tmp / "cache"), "steps": steps}})
        t0 = time.perf_counter()
        report = run_curate(dcfg, RunDir(dcfg.run_dir), labels=str(paths.labels), force=True)
        out["demo_1200_with_semantic"] = {"seconds": round(time.perf_counter() - t0, 1), "detection": report["detection"],
                                          "steps": [{k: s.get(k) for k in ("name", "input", "kept", "removed", "seconds")} for s in report["steps"]]}
        print(json.dumps(out["demo_1200_with_semantic"]["detection"], indent=1))

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "curate_pipeline.json").write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "curate_pipeline.md").write_text(markdown(out))
    print(markdown(out))


def markdown(out: dict) -> str:
    d = out["self_instruct"]["default_pipeline"]
    lines = ["# Curation stage on 55k self_instruct records (2-core shared machine)", "",
             f"Default pipeline: {d['input_records']} records in, {d['kept']} kept; wall {d['wall_seconds_including_load']} s "
             f"(loading included), CPU {d['cpu_seconds']} s, peak RSS {d.get('peak_rss_mib')} MiB, load average {d['load_before']} -> {d['load_after']}.", "",
             "| step | in | kept | removed | seconds | records/s |", "|---|---:|---:|---:|---:|---:|"]
    for s in d["steps"]:
        lines.append(f"| {s['name']} | {s['input']} | {s['kept']} | {s['removed']} | {s['seconds'] if s['seconds'] is not None else '-'} | {s.get('records_per_second') or '-'} |")
    for run in out["self_instruct"].get("semantic_after_default", []):
        lines.append("")
        lines.append(f"Semantic dedup ({run['cache']}): {run['input']} records (a random sample of the {run['all_kept']} kept), "
                     f"{run['removed']} removed, {run['seconds']} s wall, {run['cpu_seconds']} s CPU, load {run['load_before']} -> "
                     f"{run['load_after']}; scaled to all {run['all_kept']}: {run['extrapolated_seconds_for_all_kept']} s.")
    if "demo_1200_with_semantic" in out:
        lines += ["", "Demo (1200 rows) with semantic dedup on: detection vs labels", "", "| flaw | labeled | recall | precision |", "|---|---:|---:|---:|"]
        for flaw, row in out["demo_1200_with_semantic"]["detection"]["flaws"].items():
            lines.append(f"| {flaw} | {row['labeled']} | {row['recall']} | {row['precision']} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
