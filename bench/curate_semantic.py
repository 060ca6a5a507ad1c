"""Semantic dedup: detection on the demo's planted paraphrases, and speed on 55k T0 records.

Run from the repository root (the speed part needs ../shared/data)::

    nice python bench/curate_semantic.py demo     # detection, before/after, threshold sweep (~3 min)
    nice python bench/curate_semantic.py speed    # default pipeline + semantic on t0_train_50k (~6-15 min)
    nice python bench/curate_semantic.py all

demo: the demo dataset (`curatune demo-data` defaults: 1200 rows, seed 0, plus seeds 1
and 2 as a check that the defaults are not tuned to one sample) goes through the default
steps, then the semantic step runs on what they kept (its input in a real run).
Reported per configuration: semantic_dup recall and precision exactly as
``curatune curate --labels`` computes them, plus two stricter counts: *wrong pairs*
(removed records whose duplicate_of is not in their planted group) and *survivors hit*
(originals of exact/near duplicates, i.e. the records those steps kept, removed by
the semantic step as a duplicate of an unrelated record).

speed: `curatune curate` with the default steps plus `semantic` on every t0_train_50k
file, twice with a cold embedding cache, then once warm; wall and CPU seconds (this
process and its workers) and the load average before and after (the machine is shared).
A random 2,000 of the kept records is also embedded the old way (whole text, float32,
torch's 2 threads in one process) and the new way, interleaved twice, for a ratio.
Writes bench/results/curate_semantic.json and .md (a part not run keeps its earlier
results, marked with the date they were measured).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SI = ROOT.parent / "shared/data/instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template"
RESULTS = ROOT / "bench" / "results"
DEFAULT_STEPS = [{"name": "exact"}, {"name": "quality"}, {"name": "language"}, {"name": "near_dup"}]
#: How semantic dedup worked before (whole text, one cosine threshold, float32).
BEFORE = {"field": "text", "threshold": 0.95, "strip_templates": False, "numbers_must_match": False, "dtype": "float32"}


def cpu_seconds() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def load() -> float:
    return round(os.getloadavg()[0], 2)


def now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


# ----------------------------------------------------------------------------- demo


class DemoCase:
    """One demo dataset: the records the default steps keep, and the planted groups."""

    def __init__(self, tmp: Path, seed: int):
        import pandas as pd

        from curatune.config import validate_config
        from curatune.curate.detection import read_labels
        from curatune.curate.stage import run_curate
        from curatune.data.demo import generate_demo_dataset
        from curatune.records import frame_to_records
        from curatune.rundir import RunDir

        self.seed = seed
        self.paths = generate_demo_dataset(tmp / f"demo-{seed}", n_train=1200, n_heldout=100, seed=seed)
        self.tmp = tmp
        cfg = validate_config({"run_dir": str(tmp / f"pre-{seed}"), "data": {"sources": [{"path": str(self.paths.train)}]},
                               "curate": {"workers": 2, "progress": False, "steps": DEFAULT_STEPS}})
        run_curate(cfg, RunDir(cfg.run_dir), force=True)
        self.records = frame_to_records(pd.read_parquet(RunDir(cfg.run_dir).kept))
        self.row_of = {r.id: int(r.source.rsplit(":", 1)[1]) for r in self.records}
        labels = read_labels(self.paths.labels)
        parent = {}

        def find(x):
            parent.setdefault(x, x)
            while parent[x] != x:
                x = parent[x]
            return x

        self.planted = {}
        for lab in labels:
            if lab["flaw"] in ("exact_dup", "near_dup", "semantic_dup") and lab.get("of_row"):
                parent[find(lab["row"])] = find(lab["of_row"])
                self.planted.setdefault(lab["flaw"], []).append((lab["row"], lab["of_row"]))
        self.group = find
        # The records exact/near dedup kept in place of a planted copy.
        self.survivors = {of for flaw in ("exact_dup", "near_dup") for _, of in self.planted.get(flaw, [])}

    def evaluate(self, config: dict, cache_dir: Path) -> dict:
        """The semantic step on the kept records with ``config``; counts against the labels."""
        from curatune.curate.base import CurateContext
        from curatune.curate.config import SemanticDedupConfig
        from curatune.curate.dedup import SemanticDedup

        step = SemanticDedup(SemanticDedupConfig(**config))
        t0 = time.perf_counter()
        result = step.run(self.records, CurateContext(workers=2, cache_dir=cache_dir))
        seconds = time.perf_counter() - t0
        id_row = {r.id: self.row_of[r.id] for r in self.records}
        removed = [(self.row_of[r.record.id], id_row[r.duplicate_of]) for r in result.removed]
        removed_rows = {row for row, _ in removed}
        pairs = self.planted.get("semantic_dup", [])
        found = sum(1 for dup, orig in pairs
                    if dup in removed_rows or orig in removed_rows and self.group(orig) == self.group(dup))
        in_group = sum(1 for row, partner in removed if self.group(row) == self.group(partner))
        labelled = {r for flaw_pairs in self.planted.values() for pair in flaw_pairs for r in pair}
        lenient = sum(1 for row, partner in removed if self.group(row) == self.group(partner) or row in labelled)
        return {
            "config": config, "input": len(self.records), "removed": len(removed),
            "recall": round(found / len(pairs), 4) if pairs else None,
            "precision": round(lenient / len(removed), 4) if removed else None,
            "pair_precision": round(in_group / len(removed), 4) if removed else None,
            "wrong_pairs": len(removed) - in_group,
            "survivors_hit": sum(1 for row, partner in removed if row in self.survivors and self.group(row) != self.group(partner)),
            "seconds": round(seconds, 1), "counters": result.counters,
        }


def run_demo(tmp: Path) -> dict:
    from curatune.config import validate_config
    from curatune.curate.stage import run_curate
    from curatune.rundir import RunDir

    cache = tmp / "cache"
    out: dict = {"measured": now(), "load_before": load()}
    case = DemoCase(tmp, 0)
    # The documented command: every default step plus `semantic` with its defaults.
    steps = DEFAULT_STEPS + [{"name": "semantic"}, {"name": "decontaminate"}]
    cfg = validate_config({"run_dir": str(tmp / "cli-run"), "data": {"sources": [{"path": str(case.paths.train)}]},
                           "curate": {"workers": 2, "progress": False, "cache_dir": str(cache), "steps": steps}})
    t0 = time.perf_counter()
    report = run_curate(cfg, RunDir(cfg.run_dir), labels=str(case.paths.labels), force=True)
    out["pipeline_with_semantic"] = {
        "seconds": round(time.perf_counter() - t0, 1), "detection": report["detection"],
        "steps": [{k: s.get(k) for k in ("name", "input", "kept", "removed", "seconds")} for s in report["steps"]],
    }
    print(json.dumps(report["detection"]["flaws"]["semantic_dup"]), flush=True)

    rows = []

    def row(label: str, config: dict, on=case) -> None:
        result = on.evaluate(config, cache)
        result["label"] = label
        result["seed"] = on.seed
        rows.append(result)
        print(label, on.seed, {k: result[k] for k in ("removed", "recall", "precision", "pair_precision", "wrong_pairs", "survivors_hit", "seconds")}, flush=True)

    row("before: whole text, cosine 0.95", BEFORE)
    row("whole text, templates removed, 0.95", {**BEFORE, "strip_templates": True})
    row("defaults", {})
    row("defaults, float32", {"dtype": "float32"})
    row("defaults, max_seq_length 64", {"max_seq_length": 64})
    row("defaults, max_seq_length 256", {"max_seq_length": 256})
    row("defaults, no template removal", {"strip_templates": False})
    row("defaults, numbers not checked", {"numbers_must_match": False})
    row("defaults, exact all-pairs (clusters 1)", {"clusters": 1})
    row("defaults, templates: 5 records", {"template_min_records": 5})
    row("defaults, templates: 20 records", {"template_min_records": 20})
    row("defaults, templates: 5% of records", {"template_min_fraction": 0.05})
    row("defaults, informative_words 3", {"informative_words": 3})
    row("defaults, informative_words 12", {"informative_words": 12})
    for prompt_t in (0.5, 0.6, 0.7, 0.8):
        for response_t in (0.95, 0.97, 0.98, 0.99):
            row(f"sweep prompt {prompt_t} response {response_t}", {"prompt_threshold": prompt_t, "response_threshold": response_t})
    for seed in (1, 2):
        other = DemoCase(tmp, seed)
        row("before: whole text, cosine 0.95", BEFORE, other)
        row("defaults", {}, other)
    out["rows"] = rows
    out["load_after"] = load()
    return out


# ----------------------------------------------------------------------------- speed


def run_speed(tmp: Path, repeats: int = 2) -> dict:
    """`curatune curate` on t0_train_50k: default steps + semantic, cold cache (twice), then warm."""
    import pandas as pd

    from curatune.config import validate_config
    from curatune.curate.stage import run_curate
    from curatune.records import frame_to_records
    from curatune.rundir import RunDir

    if not SI.exists():
        sys.exit(f"needs {SI}")
    out: dict = {"measured": now(), "cpus": os.cpu_count(), "runs": []}
    # As bench/curate_pipeline.py: decontaminate against ARC-Easy + the 252 self-instruct
    # user-oriented instructions, so that step does real work.
    eval_paths = [str(SI.parents[3] / "human_eval/user_oriented_instructions.jsonl"),
                  str(ROOT.parent / "shared/data/bench/mc/arc_easy.jsonl")]
    steps = DEFAULT_STEPS + [{"name": "semantic"}, {"name": "decontaminate", "extra_paths": eval_paths}]
    run_dir = None
    for label in [f"cold cache #{i + 1}" for i in range(repeats)] + ["warm cache"]:
        # Every cold run starts from an empty cache; the warm run reuses the first one's.
        cache = tmp / ("cache-0" if label == "warm cache" else f"cache-{len(out['runs'])}")
        run_dir = tmp / f"t0-{len(out['runs'])}"
        cfg = validate_config({"run_dir": str(run_dir), "data": {"sources": [{"path": str(SI), "category": "{file}"}]},
                               "curate": {"workers": 2, "cache_dir": str(cache), "steps": steps}})
        load0, c0, t0 = load(), cpu_seconds(), time.perf_counter()
        report = run_curate(cfg, RunDir(cfg.run_dir), force=True)
        wall = time.perf_counter() - t0
        semantic = next(s for s in report["steps"] if s["name"] == "semantic")
        run = {"cache": label, "input_records": report["input_records"], "kept": report["kept"],
               "wall_seconds_including_load": round(wall, 1), "cpu_seconds": round(cpu_seconds() - c0, 1),
               "load_before": load0, "load_after": load(),
               "steps": [{k: s.get(k) for k in ("name", "input", "kept", "removed", "seconds")} for s in report["steps"]],
               "semantic_input": semantic["input"], "semantic_removed": semantic["removed"],
               "semantic_seconds": semantic["seconds"],
               "semantic_ms_per_record": round(1000 * semantic["seconds"] / semantic["input"], 2),
               "semantic_counters": semantic.get("counters")}
        out["runs"].append(run)
        print({k: v for k, v in run.items() if k != "steps"}, flush=True)
        if label == "cold cache #1":
            first = RunDir(cfg.run_dir)
            removed = pd.read_parquet(first.removed)
            removed = removed[removed.reason == "semantic_duplicate"]
            kept = {r.id: r for r in frame_to_records(pd.read_parquet(first.kept))}
            out["examples"] = _examples(removed, kept, 30)
            out["removed_by_regime"] = {
                "informative answers": int(removed.detail.str.contains("(informative answers)", regex=False).sum()),
                "short or templated answers": int(removed.detail.str.contains("(short or templated answers)", regex=False).sum()),
            }
            sample = random.Random(0).sample(list(kept.values()), min(2000, len(kept)))
    out["embedder_ratio"] = _embedder_ratio(sample)
    return out


def _examples(removed, kept: dict, n: int) -> list[dict]:
    from curatune.records import Record

    rows = removed.sample(min(n, len(removed)), random_state=1).to_dict("records")

    def short(text: str) -> str:
        return text if len(text) < 400 else text[:250] + " ... " + text[-140:]

    examples = []
    for row in rows:
        record, partner = Record.from_row(row), kept.get(row["duplicate_of"])
        examples.append({"removed_prompt": short(record.prompt), "removed_response": short(record.response),
                         "kept_prompt": short(partner.prompt) if partner else None,
                         "kept_response": short(partner.response) if partner else None, "detail": row["detail"]})
    return examples


def _embedder_ratio(records) -> dict:
    """Old vs new embedding of the same texts, each from a cold cache, interleaved twice."""
    import torch

    from curatune.curate.base import CurateContext
    from curatune.curate.config import SemanticDedupConfig
    from curatune.curate.dedup import semantic_views
    from curatune.curate.embeddings import _model_for

    texts_old = [r.text for r in records]
    views = semantic_views(records, SemanticDedupConfig())
    texts_new = views.prompts + views.responses
    rounds = []
    for _ in range(2):
        for name in ("old", "new"):
            with tempfile.TemporaryDirectory() as cache:
                load0, c0, t0 = load(), cpu_seconds(), time.perf_counter()
                if name == "old":
                    # As before: whole text, float32, one process with torch's default 2 threads.
                    torch.set_num_threads(2)
                    model = _model_for("default", "cpu", "float32", 128)
                    model.encode(texts_old, batch_size=64, normalize_embeddings=True, show_progress_bar=False)
                else:
                    from curatune.curate.embeddings import embed_texts

                    embed_texts(texts_new, CurateContext(workers=2, cache_dir=Path(cache)))
                wall = time.perf_counter() - t0
                rounds.append({"way": name, "records": len(records), "wall_seconds": round(wall, 1),
                               "cpu_seconds": round(cpu_seconds() - c0, 1),
                               "ms_per_record": round(1000 * wall / len(records), 2), "load_before": load0, "load_after": load()})
                print(rounds[-1], flush=True)
    best = {w: min(r["wall_seconds"] for r in rounds if r["way"] == w) for w in ("old", "new")}
    cpu = {w: min(r["cpu_seconds"] for r in rounds if r["way"] == w) for w in ("old", "new")}
    return {"rounds": rounds, "speedup_wall": round(best["old"] / best["new"], 2), "speedup_cpu": round(cpu["old"] / cpu["new"], 2),
            "texts_old": len(texts_old), "texts_new": len(texts_new), "distinct_texts_new": len(set(texts_new))}


# ----------------------------------------------------------------------------- output


def markdown(out: dict) -> str:
    lines = ["# Semantic dedup (SemDeDup for instruction data)", ""]
    demo = out.get("demo")
    if demo:
        det = demo["pipeline_with_semantic"]["detection"]["flaws"]
        lines += [f"## Demo dataset (measured {demo['measured']}, load {demo['load_before']} -> {demo['load_after']})", "",
                  "`curatune curate` with every default step plus `semantic` (defaults), labels from `curatune demo-data`:", "",
                  "| flaw | labeled | found | recall | predicted | precision |", "|---|---:|---:|---:|---:|---:|"]
        for flaw, r in det.items():
            lines.append(f"| {flaw} | {r['labeled']} | {r['found']} | {r['recall']} | {r['predicted']} | {r['precision']} |")
        lines += ["", "The semantic step alone on the records the default steps kept (recall/precision as `--labels` "
                  "computes them; *pair precision*: removed records whose duplicate_of is in their planted group; "
                  "*survivors hit*: records kept by exact/near dedup removed as a duplicate of an unrelated record):", "",
                  "| configuration | seed | in | removed | recall | precision | pair precision | wrong pairs | survivors hit | seconds |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in demo["rows"]:
            lines.append(f"| {r['label']} | {r['seed']} | {r['input']} | {r['removed']} | {r['recall']} | {r['precision']} | "
                         f"{r['pair_precision']} | {r['wrong_pairs']} | {r['survivors_hit']} | {r['seconds']} |")
    speed = out.get("speed")
    if speed and "runs" in speed:
        lines += ["", f"## Speed on t0_train_50k (measured {speed['measured']}, {speed['cpus']} cores; machine load before and after each run in the table)", "",
                  "`curatune curate` with the default steps plus `semantic` (defaults) on every t0_train_50k file "
                  "(decontaminating against ARC-Easy and the 252 user-oriented instructions):", "",
                  "| run | records in | kept | total wall s | CPU s | load before -> after | semantic: in | removed | s | ms/record |",
                  "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
        for r in speed["runs"]:
            lines.append(f"| {r['cache']} | {r['input_records']} | {r['kept']} | **{r['wall_seconds_including_load']}** | {r['cpu_seconds']} | "
                         f"{r['load_before']} -> {r['load_after']} | {r['semantic_input']} | {r['semantic_removed']} | "
                         f"{r['semantic_seconds']} | {r['semantic_ms_per_record']} |")
        first = speed["runs"][0]
        lines += ["", "Steps of the first cold run:", "", "| step | in | kept | removed | seconds |", "|---|---:|---:|---:|---:|"]
        for st in first["steps"]:
            lines.append(f"| {st['name']} | {st['input']} | {st['kept']} | {st['removed']} | {st['seconds']} |")
        lines += ["", f"Semantic removals by regime: {speed['removed_by_regime']}.", ""]
        ratio = speed["embedder_ratio"]
        lines += [f"Embedding the same {ratio['rounds'][0]['records']} random kept records, old way (whole text, float32, "
                  f"torch 2 threads) vs new (template removed, prompt and response, bfloat16 where native, 1 thread x 2 "
                  f"processes; {ratio['distinct_texts_new']} distinct texts of {ratio['texts_new']}): "
                  f"{ratio['speedup_wall']}x faster wall, {ratio['speedup_cpu']}x less CPU (best of 2 interleaved rounds).", "",
                  "| way | wall s | CPU s | ms/record | load before -> after |", "|---|---:|---:|---:|---|"]
        for r in ratio["rounds"]:
            lines.append(f"| {r['way']} | {r['wall_seconds']} | {r['cpu_seconds']} | {r['ms_per_record']} | {r['load_before']} -> {r['load_after']} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["demo", "speed", "all"])
    parser.add_argument("--repeats", type=int, default=2, help="cold-cache runs of the speed part (then one warm)")
    args = parser.parse_args()
    path = RESULTS / "curate_semantic.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    tmp = Path(tempfile.mkdtemp(prefix="curate-semantic-bench-"))
    if args.part in ("demo", "all"):
        out["demo"] = run_demo(tmp)
    if args.part in ("speed", "all"):
        out["speed"] = run_speed(tmp, repeats=args.repeats)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "curate_semantic.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
