"""Semantic dedup with static embeddings vs MiniLM vs semhash: correctness first, then speed.

Run from the repository root (speed needs ../shared/data; semhash is the peer, not a
curatune dependency: ``pip install semhash==0.5.0``)::

    nice python bench/curate_semantic_static.py demo   # detection on the demo's planted paraphrases
    nice python bench/curate_semantic_static.py speed  # 26k T0 records (semantic input), interleaved rounds
    nice python bench/curate_semantic_static.py all --cache DIR

Engines, all on the records the default steps kept (the semantic step's input in a run):

* ``minilm``: the semantic step as it was (``embedding: transformer``, all-MiniLM-L6-v2,
  bfloat16 where native, a cold embedding cache each round).
* ``static``: the same step with ``embedding: static`` (a model2vec table distilled from the
  same MiniLM; the table comes from ``--cache``, distilled there on first use, timed apart).
* ``semhash``: semhash 0.5.0 ``self_deduplicate`` on the same records' template-stripped
  prompt and response (the step's views), embedded with the same static table and the same
  128-token truncation, usearch ANN, at several thresholds (semhash's rule: the mean of the
  prompt and response cosines >= threshold; its default is 0.9).
* ``ann candidates``: semhash's index (usearch via vicinity) as the candidate search of our
  rule: every pair the step verifies has a mean cosine >= (prompt_threshold +
  response_threshold) / 2, so an ANN query at that bar is a lossless filter up to ANN misses.

demo: recall and precision on the planted paraphrases exactly as bench/curate_semantic.py
computes them (seeds 0, 1, 2), and agreement of the removals between engines.
speed: wall and CPU seconds per engine, rounds interleaved, load average before/after.
Writes bench/results/curate_semantic_static.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from curate_semantic import DEFAULT_STEPS, SI, DemoCase, cpu_seconds, load, now  # noqa: E402

from curatune.curate.base import CurateContext  # noqa: E402
from curatune.curate.config import SemanticDedupConfig  # noqa: E402
from curatune.curate.dedup import SemanticDedup, semantic_views  # noqa: E402
from curatune.curate.static_embeddings import DistillSettings, load_static_model  # noqa: E402

RESULTS = ROOT / "bench" / "results"
SEMHASH_THRESHOLDS = (0.9, 0.95, 0.97)


class TableEncoder:
    """semhash's Encoder protocol over curatune's static table (same vectors as the step)."""

    def __init__(self, context: CurateContext, max_seq_length: int = 128):
        self.model = load_static_model(context, DistillSettings())
        self.max_seq_length = max_seq_length

    def encode(self, texts, **_):
        vectors = self.model.encode(list(texts), max_length=self.max_seq_length, use_multiprocessing=False)
        vectors = vectors.astype(np.float32)
        return vectors / np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)


def run_step(records, config: dict, cache: Path) -> tuple[list[tuple[int, int]], dict]:
    """(removed index, duplicate_of index) pairs and timing of the semantic step."""
    index = {r.id: i for i, r in enumerate(records)}
    c0, t0 = cpu_seconds(), time.perf_counter()
    result = SemanticDedup(SemanticDedupConfig(**config)).run(records, CurateContext(workers=2, cache_dir=cache))
    timing = {"wall_seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(cpu_seconds() - c0, 2)}
    return [(index[r.record.id], index[r.duplicate_of]) for r in result.removed], timing


def run_semhash(records, encoder: TableEncoder, threshold: float) -> tuple[list[tuple[int, int]], dict]:
    """semhash self-deduplication on the step's views (template-stripped prompt and response)."""
    from semhash import SemHash

    c0, t0 = cpu_seconds(), time.perf_counter()
    views = semantic_views(records, SemanticDedupConfig())
    rows = [{"prompt": p, "response": r, "i": i} for i, (p, r) in enumerate(zip(views.prompts, views.responses))]
    result = SemHash.from_records(rows, columns=["prompt", "response"], model=encoder).self_deduplicate(threshold)
    timing = {"wall_seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(cpu_seconds() - c0, 2)}
    return [(d.record["i"], d.duplicate_of["i"]) for d in result.filtered], timing


def score(case: DemoCase, removed: list[tuple[int, int]]) -> dict:
    """Recall and precision against the planted groups, as bench/curate_semantic.py computes them."""
    rows = [case.row_of[r.id] for r in case.records]
    pairs = [(rows[i], rows[j]) for i, j in removed]
    removed_rows = {row for row, _ in pairs}
    planted = case.planted.get("semantic_dup", [])
    found = sum(1 for dup, orig in planted
                if dup in removed_rows or orig in removed_rows and case.group(orig) == case.group(dup))
    in_group = sum(1 for row, partner in pairs if case.group(row) == case.group(partner))
    labelled = {r for flaw_pairs in case.planted.values() for pair in flaw_pairs for r in pair}
    lenient = sum(1 for row, partner in pairs if case.group(row) == case.group(partner) or row in labelled)
    return {"removed": len(pairs), "recall": round(found / len(planted), 4) if planted else None,
            "precision": round(lenient / len(pairs), 4) if pairs else None,
            "pair_precision": round(in_group / len(pairs), 4) if pairs else None, "wrong_pairs": len(pairs) - in_group}


def agreement(a: list[tuple[int, int]], b: list[tuple[int, int]]) -> dict:
    """How far two engines remove the same records (Jaccard of the removed sets)."""
    sa, sb = {i for i, _ in a}, {i for i, _ in b}
    union = sa | sb
    return {"both": len(sa & sb), "only_first": len(sa - sb), "only_second": len(sb - sa),
            "jaccard": round(len(sa & sb) / len(union), 4) if union else 1.0}


def table_context(cache: Path) -> tuple[CurateContext, dict]:
    """The static table from ``cache``, distilled now (and timed) when missing."""
    context = CurateContext(workers=2, cache_dir=cache)
    c0, t0, load0 = cpu_seconds(), time.perf_counter(), load()
    existed = (cache / "static").exists() and any((cache / "static").glob("*/distillation.json"))
    load_static_model(context, DistillSettings())
    info = {"table": "from cache" if existed else "distilled in this run",
            "wall_seconds": round(time.perf_counter() - t0, 1), "cpu_seconds": round(cpu_seconds() - c0, 1),
            "load_before": load0, "load_after": load()}
    print("table", info, flush=True)
    return context, info


def run_demo(tmp: Path, cache: Path) -> dict:
    context, table = table_context(cache)
    encoder = TableEncoder(context)
    out = {"measured": now(), "load_before": load(), "table": table, "rows": [], "agreement": []}
    for seed in (0, 1, 2):
        case = DemoCase(tmp, seed)
        removed = {}
        engines = [("minilm", lambda: run_step(case.records, {}, tmp / f"emb-{seed}")),
                   ("static", lambda: run_step(case.records, {"embedding": "static"}, cache))]
        engines += [(f"semhash {t}", lambda t=t: run_semhash(case.records, encoder, t)) for t in SEMHASH_THRESHOLDS]
        for name, run in engines:
            removed[name], timing = run()
            row = {"engine": name, "seed": seed, "input": len(case.records), **score(case, removed[name]), **timing}
            out["rows"].append(row)
            print(row, flush=True)
        for other in ["static"] + [f"semhash {t}" for t in SEMHASH_THRESHOLDS]:
            base = "minilm" if other == "static" else "static"
            out["agreement"].append({"seed": seed, "first": base, "second": other, **agreement(removed[base], removed[other])})
    out["load_after"] = load()
    return out


def t0_records(tmp: Path):
    """The records the default steps keep from every t0_train_50k file (the semantic input)."""
    import pandas as pd

    from curatune.config import validate_config
    from curatune.curate.stage import run_curate
    from curatune.records import frame_to_records
    from curatune.rundir import RunDir

    cfg = validate_config({"run_dir": str(tmp / "t0-pre"), "data": {"sources": [{"path": str(SI), "category": "{file}"}]},
                           "curate": {"workers": 2, "progress": False, "steps": DEFAULT_STEPS}})
    run_curate(cfg, RunDir(cfg.run_dir), force=True)
    return frame_to_records(pd.read_parquet(RunDir(cfg.run_dir).kept))


def ann_candidates(records, context: CurateContext) -> dict:
    """semhash's ANN index as the candidate search of the step's rule, against the exact search."""
    from semhash.index import Index

    cfg = SemanticDedupConfig(embedding="static")
    views = semantic_views(records, cfg)
    n = len(records)
    encoder = TableEncoder(context)
    vectors = encoder.encode(views.prompts + views.responses)
    joint = np.hstack([vectors[:n], vectors[n:]]) / np.sqrt(2.0)
    bar = (cfg.prompt_threshold + cfg.response_threshold) / 2
    c0, t0 = cpu_seconds(), time.perf_counter()
    index = Index.from_vectors_and_items(joint, [[i] for i in range(n)], backend_type="usearch")
    neighbours = index.query_threshold(joint, threshold=bar)
    timing = {"wall_seconds": round(time.perf_counter() - t0, 2), "cpu_seconds": round(cpu_seconds() - c0, 2)}
    found = {(min(i, int(j)), max(i, int(j))) for i, (ids, _) in enumerate(neighbours) for j in ids if int(j) != i}
    step = SemanticDedup(cfg)
    exact = step._pairs(views, vectors[:n], vectors[n:], np.zeros(n, dtype=np.int64), 1, context)
    verified = set(zip(exact[0].tolist(), exact[1].tolist()))
    return {"bar": bar, "ann_candidate_pairs": len(found), "verified_pairs_exact": len(verified),
            "verified_pairs_missed_by_ann": len(verified - found), **timing}


def run_speed(tmp: Path, cache: Path, rounds: int, subset: int | None = None, kept: Path | None = None) -> dict:
    """Each round: the step with MiniLM (cold cache) and static on the same records, then static
    and semhash on all. ``subset``: MiniLM and static also on a random sample of that size
    (on a machine too loaded for MiniLM on every record); ``kept``: reuse the default steps' output."""
    import random

    import pandas as pd

    from curatune.records import frame_to_records

    if kept is None and not SI.exists():
        sys.exit(f"needs {SI}")
    out: dict = {"measured": now(), "cpus": os.cpu_count(), "rounds": [], "subset": subset}
    context, out["table"] = table_context(cache)
    encoder = TableEncoder(context)
    records = frame_to_records(pd.read_parquet(kept)) if kept else t0_records(tmp)
    sample = random.Random(0).sample(records, subset) if subset else records
    out["records"] = len(records)
    removed = {}
    for r in range(rounds):
        on = f"{len(sample)} sampled" if subset else "all"
        engines = [(f"minilm (cold embedding cache), {on}", sample, lambda: run_step(sample, {}, tmp / f"emb-{r}")),
                   (f"static, {on}", sample, lambda: run_step(sample, {"embedding": "static"}, cache))]
        if subset:
            engines.append(("static, all", records, lambda: run_step(records, {"embedding": "static"}, cache)))
        engines.append(("semhash 0.9, all", records, lambda: run_semhash(records, encoder, 0.9)))
        for name, these, run in engines:
            load0 = load()
            removed[name], timing = run()
            row = {"engine": name, "round": r + 1, "records": len(these), "removed": len(removed[name]), **timing,
                   "records_per_second": round(len(these) / timing["wall_seconds"], 1),
                   "records_per_cpu_second": round(len(these) / timing["cpu_seconds"], 1),
                   "load_before": load0, "load_after": load()}
            out["rounds"].append(row)
            print(row, flush=True)
        summarize_speed(out)
        save_part("speed", out)
    names = list(removed)
    out["agreement"] = [{"first": names[0], "second": names[1], **agreement(removed[names[0]], removed[names[1]])}]
    if not subset:
        out["agreement"].append({"first": names[1], "second": names[-1], **agreement(removed[names[1]], removed[names[-1]])})
    print(out["speedup_vs_minilm"], out["agreement"], flush=True)
    return out


def summarize_speed(out: dict) -> None:
    """Best round per engine (records/s) and the speed-ups over MiniLM."""
    best = {}
    for name in dict.fromkeys(row["engine"] for row in out["rounds"]):
        mine = [row for row in out["rounds"] if row["engine"] == name]
        best[name] = {"records_per_second": max(x["records_per_second"] for x in mine),
                      "records_per_cpu_second": max(x["records_per_cpu_second"] for x in mine)}
    base = next(b for name, b in best.items() if name.startswith("minilm"))
    out["best"] = best
    out["speedup_vs_minilm"] = {name: {"wall": round(b["records_per_second"] / base["records_per_second"], 1),
                                       "cpu": round(b["records_per_cpu_second"] / base["records_per_cpu_second"], 1)}
                                for name, b in best.items()}


def run_agreement(kept: Path, minilm_cache: Path, cache: Path) -> dict:
    """Removals of the three engines on the same T0 records, MiniLM from a warm cache (same vectors
    as its cold run), and semhash's ANN as candidate search. For runs whose speed part was cut short."""
    import pandas as pd

    from curatune.records import frame_to_records

    records = frame_to_records(pd.read_parquet(kept))
    context, _ = table_context(cache)
    removed = {"minilm": run_step(records, {}, minilm_cache)[0], "static": run_step(records, {"embedding": "static"}, cache)[0],
               "semhash 0.9": run_semhash(records, TableEncoder(context), 0.9)[0]}
    out = {"measured": now(), "records": len(records), "removed": {k: len(v) for k, v in removed.items()},
           "agreement": [{"first": "minilm", "second": "static", **agreement(removed["minilm"], removed["static"])},
                         {"first": "static", "second": "semhash 0.9", **agreement(removed["static"], removed["semhash 0.9"])}],
           "ann_candidates": ann_candidates(records, context)}
    print(out, flush=True)
    return out


def save_part(name: str, value: dict) -> None:
    path = RESULTS / "curate_semantic_static.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    out[name] = value
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "curate_semantic_static.md").write_text(markdown(out))


def markdown(out: dict) -> str:
    lines = ["# Semantic dedup: static embeddings vs MiniLM vs semhash", "",
             "Script: bench/curate_semantic_static.py. Static table: model2vec 0.10 `distill_from_model` on the embedded "
             "all-MiniLM-L6-v2 (256 PCA dims, SIF 1e-4, float32), offline. semhash 0.5.0 with the same table.", ""]
    demo = out.get("demo")
    if demo:
        t = demo["table"]
        lines += [f"## Correctness: the demo's planted paraphrases (measured {demo['measured']}, load {demo['load_before']} -> {demo['load_after']})", "",
                  "The semantic step (or semhash) on the records the default steps kept, `curatune demo-data` seeds 0-2 "
                  "(recall/precision as bench/curate_semantic.py computes them).", "",
                  "| engine | seed | in | removed | recall | precision | pair precision | wrong pairs | wall s | CPU s |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in demo["rows"]:
            lines.append(f"| {r['engine']} | {r['seed']} | {r['input']} | {r['removed']} | {r['recall']} | {r['precision']} | "
                         f"{r['pair_precision']} | {r['wrong_pairs']} | {r['wall_seconds']} | {r['cpu_seconds']} |")
        lines += ["", "Agreement of the removed records (same records, same table for static vs semhash):", "",
                  "| seed | first | second | both | only first | only second | Jaccard |", "|---:|---|---|---:|---:|---:|---:|"]
        for a in demo["agreement"]:
            lines.append(f"| {a['seed']} | {a['first']} | {a['second']} | {a['both']} | {a['only_first']} | {a['only_second']} | {a['jaccard']} |")
        lines += ["", f"Static table: {t['table']} ({t['wall_seconds']} s wall, {t['cpu_seconds']} CPU s, load {t['load_before']} -> {t['load_after']})."]
    speed = out.get("speed")
    if speed:
        t = speed["table"]
        lines += ["", f"## Speed: {speed['records']} T0 records, the semantic step's input from t0_train_50k (measured {speed['measured']}, {speed['cpus']} cores, shared machine)", "",
                  "| engine | round | records | removed | wall s | CPU s | records/s | records/CPU s | load before -> after |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in speed["rounds"]:
            lines.append(f"| {r['engine']} | {r['round']} | {r['records']} | {r['removed']} | {r['wall_seconds']} | {r['cpu_seconds']} | "
                         f"{r['records_per_second']} | {r['records_per_cpu_second']} | {r['load_before']} -> {r['load_after']} |")
        lines += ["", "Speed-up in records/s over MiniLM (best round of each): " + ", ".join(
            f"{k}: **{v['wall']}x** wall, {v['cpu']}x CPU" for k, v in speed["speedup_vs_minilm"].items() if not k.startswith("minilm")) + "."]
        if speed.get("agreement"):
            lines += ["", "| first | second | both removed | only first | only second | Jaccard |", "|---|---|---:|---:|---:|---:|"]
        for a in speed.get("agreement", []):
            lines.append(f"| {a['first']} | {a['second']} | {a['both']} | {a['only_first']} | {a['only_second']} | {a['jaccard']} |")
        lines += ["", f"Static table: {t['table']} ({t['wall_seconds']} s wall, {t['cpu_seconds']} CPU s, load {t['load_before']} -> {t['load_after']})."]
    if out.get("ann_candidates"):
        a = out["ann_candidates"]
        lines += ["", f"## semhash's ANN index as the step's candidate search ({out['ann_candidates'].get('measured')}, "
                  f"load {a.get('load_before')} -> {a.get('load_after')})", "",
                  f"On the same T0 records with the static table: usearch (via semhash's Index) at mean cosine >= {a['bar']} "
                  f"(every pair the step's rule accepts is above it) returns {a['ann_candidate_pairs']} candidate pairs in "
                  f"{a['wall_seconds']} s wall ({a['cpu_seconds']} CPU s); of the {a['verified_pairs_exact']} pairs the exact "
                  f"blocked search verifies, {a['verified_pairs_missed_by_ann']} are not among them."]
    agree = out.get("t0_agreement")
    if agree:
        if agree is not speed:
            lines += ["", f"## Agreement on the same T0 records (measured {agree['measured']}; MiniLM from the embedding cache "
                      f"its cold run left, so the same vectors): removed {agree['removed']}", "",
                      "| first | second | both removed | only first | only second | Jaccard |", "|---|---|---:|---:|---:|---:|"]
            for a in agree["agreement"]:
                lines.append(f"| {a['first']} | {a['second']} | {a['both']} | {a['only_first']} | {a['only_second']} | {a['jaccard']} |")
        a = agree["ann_candidates"]
        lines += ["", f"semhash's ANN index (usearch) as the step's candidate search (mean cosine >= {a['bar']}): "
                  f"{a['ann_candidate_pairs']} candidate pairs in {a['wall_seconds']} s wall ({a['cpu_seconds']} CPU s); "
                  f"of the {a['verified_pairs_exact']} pairs the exact blocked search verifies, {a['verified_pairs_missed_by_ann']} "
                  "are not among them."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("part", choices=["demo", "speed", "agreement", "ann", "all"])
    parser.add_argument("--kept", type=Path, help="kept.parquet of the default steps on T0 (skips running them)")
    parser.add_argument("--minilm-cache", type=Path, help="agreement: the embedding cache a cold MiniLM round left")
    parser.add_argument("--cache", type=Path, default=None, help="cache dir holding (or receiving) the static table")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--subset", type=int, default=None, help="speed: MiniLM vs static on a random sample of this size")
    args = parser.parse_args()
    path = RESULTS / "curate_semantic_static.json"
    out = json.loads(path.read_text()) if path.exists() else {}
    tmp = Path(tempfile.mkdtemp(prefix="semantic-static-bench-"))
    cache = args.cache or tmp / "cache"
    if args.part in ("demo", "all"):
        out["demo"] = run_demo(tmp, cache)
    if args.part in ("speed", "all"):
        out["speed"] = run_speed(tmp, cache, args.rounds, args.subset, args.kept)
    if args.part == "ann":
        import pandas as pd

        from curatune.records import frame_to_records

        records = frame_to_records(pd.read_parquet(args.kept)) if args.kept else t0_records(tmp)
        out["ann_candidates"] = {"measured": now(), "load_before": load(),
                                 **ann_candidates(records, table_context(cache)[0]), "load_after": load()}
    if args.part == "agreement":
        out["t0_agreement"] = run_agreement(args.kept, args.minilm_cache, cache)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out, indent=2) + "\n")
    (RESULTS / "curate_semantic_static.md").write_text(markdown(out))
    print(markdown(out))


if __name__ == "__main__":
    main()
