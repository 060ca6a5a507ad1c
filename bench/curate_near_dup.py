"""Near-duplicate detection: curatune vs datatrove's MinHash pipeline vs plain datasketch.

Run from the repository root (needs ../shared/data; datatrove only for that contender)::

    nice python bench/curate_near_dup.py --rounds 2

Datasets: the demo dataset (planted, labelled near-duplicates) and the 55k self_instruct
records (T0 templates) with 500 planted near-duplicates of Jaccard >= 0.8 added.
Each contender runs in its own subprocess (clean memory and CPU accounting), the
contenders are interleaved round by round, and the machine load is recorded, because
the machine is shared. All three use word 5-grams, 128 permutations, threshold 0.7.

Metrics (tool-agnostic, computed on record positions):
  planted recall   - planted pairs where the copy or its original was removed
  precision        - removed records that have a partner of exact 5-gram Jaccard >= 0.7
                     (ground truth from a permissive LSH pass + exact Jaccard of every
                     candidate pair); on the demo data: removed records that are labelled
                     duplicates (or the original of one)
  cluster recall   - over ground-truth clusters (connected pairs of Jaccard >= 0.7),
                     sum(min(removed, size-1)) / sum(size-1)
Writes bench/results/curate_near_dup.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"
SELF_INSTRUCT = SHARED / "instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template"
RESULTS = ROOT / "bench" / "results"
NGRAM, NUM_PERM, THRESHOLD = 5, 128, 0.7
PLANTED = 500


# ----------------------------------------------------------------------------- datasets


def self_instruct_texts() -> list[str]:
    texts = []
    for f in sorted(SELF_INSTRUCT.glob("*.jsonl")):
        for line in open(f, encoding="utf-8"):
            if line.strip():
                d = json.loads(line)
                texts.append(d["prompt"] + "\n" + d["completion"])
    return texts


def plant_near_dups(texts: list[str], n: int, seed: int = 0) -> tuple[list[str], list[tuple[int, int]]]:
    """Append ``n`` edited copies (exact 5-gram Jaccard >= 0.8 with their original)."""
    from curatune.curate.text import jaccard, shingle_set

    rng = random.Random(seed)
    out, pairs = list(texts), []
    candidates = [i for i, t in enumerate(texts) if 40 <= len(t.split()) <= 600]
    rng.shuffle(candidates)
    for i in candidates:
        if len(pairs) == n:
            break
        tokens = texts[i].split(" ")
        edits = max(1, len(tokens) // 60)
        for _ in range(edits):  # a typo, a dropped word or a doubled word
            j = rng.randrange(len(tokens))
            kind = rng.random()
            if kind < 0.4:
                tokens[j] = tokens[j][::-1] if len(tokens[j]) > 3 else tokens[j] + "s"
            elif kind < 0.7:
                tokens.pop(j)
            else:
                tokens.insert(j, tokens[j])
        copy = " ".join(tokens)
        if copy != texts[i] and jaccard(shingle_set(copy, NGRAM), shingle_set(texts[i], NGRAM)) >= 0.8:
            pairs.append((i, len(out)))
            out.append(copy)
    return out, pairs


def demo_texts(tmp: Path, n_train: int) -> tuple[list[str], list[tuple[int, int]], set[int]]:
    """Demo train texts (as the alpaca converter builds them), planted near-dup pairs, all dup rows."""
    from curatune.data.demo import generate_demo_dataset

    paths = generate_demo_dataset(tmp / "demo", n_train=n_train, n_heldout=10, seed=0)
    rows = [json.loads(line) for line in open(paths.train, encoding="utf-8")]
    texts = [(r["instruction"] + "\n\n" + r["input"]).strip() + "\n" + r["output"] for r in rows]
    pairs, dup_rows = [], set()
    for label in map(json.loads, open(paths.labels, encoding="utf-8")):
        if label["flaw"] in ("exact_dup", "near_dup", "semantic_dup") and label.get("of_row"):
            dup_rows.update({label["row"] - 1, label["of_row"] - 1})
            if label["flaw"] == "near_dup":
                pairs.append((label["of_row"] - 1, label["row"] - 1))
    return texts, pairs, dup_rows


# ----------------------------------------------------------------------------- contenders (subprocess)


def run_curatune(texts: list[str]) -> list[int]:
    from curatune.curate.base import CurateContext
    from curatune.curate.config import NearDupConfig
    from curatune.curate.dedup import NearDupDedup
    from curatune.records import Record

    import datasketch  # noqa: F401  (imports outside the timed region, as for the other tools)
    import scipy.sparse.csgraph  # noqa: F401

    # One message per record so Record.text is exactly the text the other tools see.
    records = [Record(str(i), [{"role": "assistant", "content": t}]) for i, t in enumerate(texts)]
    start = time.perf_counter()
    result = NearDupDedup(NearDupConfig(ngram=NGRAM, num_perm=NUM_PERM, threshold=THRESHOLD)).run(records, CurateContext(workers=2))
    _mark(start)
    return [int(r.record.id) for r in result.removed]


def run_datasketch(texts: list[str]) -> list[int]:
    """The plain script: MinHash.bulk over the same shingles, MinHashLSH query-then-insert."""
    from datasketch import MinHash, MinHashLSH

    from curatune.curate.text import words

    start = time.perf_counter()
    shingles = []
    for t in texts:
        w = words(t)
        grams = [" ".join(w[i : i + NGRAM]) for i in range(len(w) - NGRAM + 1)] or ([" ".join(w)] if w else [])
        shingles.append([g.encode("utf-8") for g in grams])
    minhashes = MinHash.bulk(shingles, num_perm=NUM_PERM)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    removed = []
    for i, m in enumerate(minhashes):
        if not shingles[i]:
            continue
        if lsh.query(m):
            removed.append(i)
        else:
            lsh.insert(str(i), m)
    _mark(start)
    return removed


def run_datatrove(texts: list[str], shards: int = 2) -> list[int]:
    from datatrove.executor.local import LocalPipelineExecutor
    from datatrove.pipeline.dedup.minhash import (
        MinhashConfig, MinhashDedupBuckets, MinhashDedupCluster, MinhashDedupFilter, MinhashDedupSignature,
    )
    from datatrove.pipeline.readers import JsonlReader
    from datatrove.pipeline.writers import JsonlWriter
    from datatrove.utils.hashing import HashConfig

    _let_xxhash_take_str()

    tmp = Path(tempfile.mkdtemp(prefix="dt-bench-"))
    (tmp / "input").mkdir()
    for s in range(shards):  # written before timing; reading it is part of the timed pipeline
        with open(tmp / "input" / f"{s:02d}.jsonl", "w") as f:
            for i in range(s, len(texts), shards):
                f.write(json.dumps({"id": str(i), "text": texts[i]}) + "\n")
    config = MinhashConfig(n_grams=NGRAM, num_buckets=16, hashes_per_bucket=8, hash_config=HashConfig(precision=64))
    start = time.perf_counter()
    LocalPipelineExecutor(
        [JsonlReader(str(tmp / "input")), MinhashDedupSignature(output_folder=str(tmp / "sigs"), config=config)],
        tasks=shards, workers=2, logging_dir=str(tmp / "logs1"), start_method="fork",
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupBuckets(input_folder=str(tmp / "sigs"), output_folder=str(tmp / "buckets"), config=config)],
        tasks=config.num_buckets, workers=2, logging_dir=str(tmp / "logs2"), start_method="fork",
    ).run()
    LocalPipelineExecutor(
        [MinhashDedupCluster(input_folder=str(tmp / "buckets"), output_folder=str(tmp / "remove_ids"), config=config)],
        tasks=1, logging_dir=str(tmp / "logs3"), start_method="fork",
    ).run()
    LocalPipelineExecutor(
        [JsonlReader(str(tmp / "input")), MinhashDedupFilter(input_folder=str(tmp / "remove_ids"),
                                                               exclusion_writer=JsonlWriter(str(tmp / "removed"), compression=None))],
        tasks=shards, workers=2, logging_dir=str(tmp / "logs4"), start_method="fork",
    ).run()
    _mark(start)
    removed = []
    for f in (tmp / "removed").glob("*.jsonl"):
        removed += [int(json.loads(line)["id"]) for line in open(f)]
    return removed


def _let_xxhash_take_str() -> None:
    """datatrove 0.10 hashes str, which xxhash >= 4 refuses: encode first (what older xxhash did)."""
    import xxhash

    for name in ("xxh64_intdigest", "xxh32_intdigest", "xxh3_64_intdigest"):
        original = getattr(xxhash, name)
        setattr(xxhash, name, lambda data, seed=0, _f=original: _f(data.encode("utf-8") if isinstance(data, str) else data, seed))


_TIMING: dict[str, float] = {}


def _mark(start: float) -> None:
    _TIMING["seconds"] = time.perf_counter() - start


def contender_main(name: str, texts_path: str, out_path: str) -> None:
    texts = json.load(open(texts_path))
    cpu0 = _cpu()
    removed = {"curatune": run_curatune, "datasketch": run_datasketch, "datatrove": run_datatrove}[name](texts)
    json.dump({"removed": sorted(set(removed)), "seconds": _TIMING["seconds"], "cpu_seconds": _cpu() - cpu0}, open(out_path, "w"))


def _cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


# ----------------------------------------------------------------------------- ground truth and metrics


def ground_truth_pairs(texts: list[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs with exact 5-gram Jaccard >= 0.5 that a permissive LSH finds (b=32, r=4)."""
    from curatune.curate.minhash import _sign_chunk, verified_pairs
    from curatune.curate.text import jaccard, shingle_set

    sig = np.concatenate([_sign_chunk((texts[i : i + 5000], NGRAM, NUM_PERM, 7)) for i in range(0, len(texts), 5000)])
    usable = (sig != np.uint32(0xFFFFFFFF)).any(axis=1)
    pairs = verified_pairs(sig, usable, 32, 4, 0.45, max_rounds=10_000)
    key = np.unique(np.stack([np.minimum(pairs.left, pairs.right), np.maximum(pairs.left, pairs.right)], 1), axis=0)
    sets: dict[int, set] = {}
    exact = np.array([jaccard(sets.setdefault(a, shingle_set(texts[a], NGRAM)), sets.setdefault(b, shingle_set(texts[b], NGRAM))) for a, b in key])
    return key[:, 0], key[:, 1], exact


def metrics(n: int, removed: list[int], gt: tuple, planted: list[tuple[int, int]], dup_rows: set[int] | None) -> dict:
    from curatune.curate.minhash import connected_clusters

    left, right, exact = gt
    strong = exact >= THRESHOLD
    removed_set = set(removed)
    has_partner = set(left[strong].tolist()) | set(right[strong].tolist())
    labels = connected_clusters(n, left[strong], right[strong])
    sizes = np.bincount(labels)
    removed_per = np.bincount(labels[np.array(sorted(removed_set), dtype=np.int64)], minlength=len(sizes)) if removed_set else np.zeros(len(sizes), int)
    excess = int((sizes - 1).sum())
    out = {
        "removed": len(removed_set),
        "planted_recall": round(sum(a in removed_set or b in removed_set for a, b in planted) / len(planted), 4) if planted else None,
        "precision_jaccard": round(sum(r in has_partner for r in removed_set) / len(removed_set), 4) if removed_set else None,
        "cluster_recall": round(int(np.minimum(removed_per, sizes - 1).sum()) / excess, 4) if excess else None,
    }
    if dup_rows is not None:
        out["precision_labels"] = round(sum(r in dup_rows for r in removed_set) / len(removed_set), 4) if removed_set else None
    return out


def agreement(a: set[int], b: set[int]) -> float:
    return round(len(a & b) / max(len(a | b), 1), 4)


def explain(name_a: str, a: set[int], name_b: str, b: set[int], gt: tuple, n: int) -> dict:
    """Why two removed sets differ: exact Jaccard of each disputed record's best neighbour,
    and how many disputes are the same cluster with a different survivor."""
    left, right, exact = gt
    best = np.zeros(n)
    np.maximum.at(best, left, exact)
    np.maximum.at(best, right, exact)
    neighbours: dict[int, list[int]] = {}
    for x, y, j in zip(left.tolist(), right.tolist(), exact.tolist()):
        if j >= THRESHOLD:
            neighbours.setdefault(x, []).append(y)
            neighbours.setdefault(y, []).append(x)

    def bucket(ids: set[int], other: set[int]) -> dict:
        vals = best[list(ids)] if ids else np.zeros(0)
        return {
            "count": len(ids),
            "best_jaccard<0.6": int((vals < 0.6).sum()),
            "0.6-0.7": int(((vals >= 0.6) & (vals < 0.7)).sum()),
            "0.7-0.8": int(((vals >= 0.7) & (vals < 0.8)).sum()),
            ">=0.8": int((vals >= 0.8).sum()),
            "other_tool_removed_a_neighbour_instead": int(sum(any(nb in other for nb in neighbours.get(i, [])) for i in ids)),
        }

    only_a, only_b = a - b, b - a
    return {f"only_{name_a}": bucket(only_a, b), f"only_{name_b}": bucket(only_b, a)}


# ----------------------------------------------------------------------------- orchestration


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--contender")
    parser.add_argument("--texts")
    parser.add_argument("--out")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--demo-size", type=int, default=5000)
    parser.add_argument("--contenders", default="curatune,datasketch,datatrove")
    args = parser.parse_args()
    if args.contender:
        contender_main(args.contender, args.texts, args.out)
        return
    if not SELF_INSTRUCT.exists():
        sys.exit(f"needs {SELF_INSTRUCT} (see ../shared/DATA.md)")
    tmp = Path(tempfile.mkdtemp(prefix="curate-bench-"))
    demo, demo_pairs, demo_dups = demo_texts(tmp, args.demo_size)
    si, si_pairs = plant_near_dups(self_instruct_texts(), PLANTED)
    datasets = {"demo": (demo, demo_pairs, demo_dups), "self_instruct": (si, si_pairs, None)}
    contenders = args.contenders.split(",")
    results: dict = {"machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]}, "settings": {
        "ngram": NGRAM, "num_perm": NUM_PERM, "threshold": THRESHOLD, "rounds": args.rounds, "planted_self_instruct": len(si_pairs),
        "datatrove": "4 stages, 2 input shards, 2 workers, 16 buckets x 8 hashes, 64-bit hashes",
        "datasketch": "MinHash.bulk + MinHashLSH(threshold=0.7), query-then-insert, one process",
        "curatune": "NearDupDedup step, workers=2 (bands chosen for recall, every candidate verified)"}, "datasets": {}}
    for dname, (texts, planted, dups) in datasets.items():
        path = tmp / f"{dname}.json"
        json.dump(texts, open(path, "w"))
        gt = ground_truth_pairs(texts)
        runs: dict[str, list] = {c: [] for c in contenders}
        removed_sets: dict[str, set] = {}
        for rnd in range(args.rounds):
            order = contenders if rnd % 2 == 0 else contenders[::-1]  # interleaved, alternating order
            for c in order:
                out = tmp / f"{dname}-{c}-{rnd}.json"
                load = os.getloadavg()[0]
                proc = subprocess.run([sys.executable, __file__, "--contender", c, "--texts", str(path), "--out", str(out)],
                                      capture_output=True, text=True)
                if proc.returncode != 0:
                    print(proc.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{c} failed on {dname}")
                r = json.load(open(out))
                runs[c].append({"seconds": round(r["seconds"], 2), "cpu_seconds": round(r["cpu_seconds"], 2),
                                "load_before": round(load, 2), "load_after": round(os.getloadavg()[0], 2)})
                removed_sets[c] = set(r["removed"])
                print(f"{dname} round {rnd} {c}: {r['seconds']:.1f}s wall, {len(r['removed'])} removed, load {load:.1f}", flush=True)
        summary = {}
        for c in contenders:
            best = min(x["seconds"] for x in runs[c])
            summary[c] = {"runs": runs[c], "best_seconds": best, "records_per_second": round(len(texts) / best, 1),
                          **metrics(len(texts), sorted(removed_sets[c]), gt, planted, dups)}
        for c in contenders:
            summary[c]["throughput_ratio_vs_curatune"] = round(summary["curatune"]["best_seconds"] / summary[c]["best_seconds"], 3) if "curatune" in summary else None
        pairs = {}
        for i, a in enumerate(contenders):
            for b in contenders[i + 1 :]:
                pairs[f"{a}~{b}"] = {"jaccard_of_removed_sets": agreement(removed_sets[a], removed_sets[b]),
                                     **explain(a, removed_sets[a], b, removed_sets[b], gt, len(texts))}
        results["datasets"][dname] = {"records": len(texts), "planted_pairs": len(planted),
                                      "ground_truth_pairs_j>=0.7": int((gt[2] >= THRESHOLD).sum()),
                                      "contenders": summary, "agreement": pairs}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "curate_near_dup.json").write_text(json.dumps(results, indent=2) + "\n")
    (RESULTS / "curate_near_dup.md").write_text(markdown(results))
    print(markdown(results))


def markdown(results: dict) -> str:
    lines = ["# Near-duplicate detection: curatune vs datatrove vs datasketch", "",
             f"Settings: {json.dumps(results['settings'])}", "",
             "| dataset | tool | records/s (best) | ratio vs curatune speed | CPU s | removed | planted recall | precision (J>=0.7) | cluster recall | precision (labels) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for dname, d in results["datasets"].items():
        for c, s in d["contenders"].items():
            cpu = min(r["cpu_seconds"] for r in s["runs"])
            lines.append(f"| {dname} ({d['records']}) | {c} | {s['records_per_second']:.0f} | {s['throughput_ratio_vs_curatune']} | {cpu:.1f} | {s['removed']} | "
                         f"{s['planted_recall']} | {s['precision_jaccard']} | {s['cluster_recall']} | {s.get('precision_labels', '-')} |")
    lines += ["", "Agreement (Jaccard of removed-id sets) and disputed records by the exact Jaccard of their best neighbour:", ""]
    for dname, d in results["datasets"].items():
        for pair, a in d["agreement"].items():
            lines.append(f"- {dname} {pair}: {a['jaccard_of_removed_sets']} — " + "; ".join(f"{k}: {v}" for k, v in a.items() if k != "jaccard_of_removed_sets"))
    lines += ["", "Loads recorded per run are in curate_near_dup.json (the machine is shared)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
