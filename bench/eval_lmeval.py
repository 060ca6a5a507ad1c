"""curatune's multiple-choice scorer vs EleutherAI lm-evaluation-harness, side by side.

Both contenders score the same items (seeded subsets of ../shared/data/bench/mc) with the
same model in float32 on CPU, in one process, interleaved round by round (A B, then B A)
so that the shared machine's load hits both alike. lm-eval runs through ``simple_evaluate``
with ``HFLM`` on the local model directory and a local task YAML pointing at a JSONL of the
exact items; curatune runs ``score_multiple_choice``. Reported:

* agreement: per-item predictions (acc and acc_norm argmax) identical, and the largest
  absolute log-likelihood difference over all choices;
* speed: items/s of each at the same batch size (lm-eval: the time inside its
  ``loglikelihood`` call, tokenization included, and the whole ``simple_evaluate``;
  curatune: the whole ``score_multiple_choice`` call), and the ratio;
* the machine's load average around every timed run.

Needs ``pip install lm-eval`` (bench only; curatune does not depend on it).

    nice python bench/eval_lmeval.py                       # SmolLM2-135M-Instruct, 4 tasks, 150 items each
    nice python bench/eval_lmeval.py --tiny --limit 40     # a 5M-parameter random Llama, quick check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED_MC = REPO.parent / "shared" / "data" / "bench" / "mc"
HELLASWAG = REPO.parent / "shared" / "data" / "bench" / "hellaswag" / "hellaswag_val_full.txt.bz2"
RESULTS = REPO / "bench" / "results"

TASK_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
{fields}
metric_list:
  - metric: acc
    aggregation: mean
    higher_is_better: true
  - metric: acc_norm
    aggregation: mean
    higher_is_better: true
metadata:
  version: 1.0
"""
# llm-foundry rows {query, choices, gold}: the query is the whole prompt, as in lm-eval's own configs
MC_FIELDS = "doc_to_text: query\ndoc_to_target: gold\ndoc_to_choice: choices"
# partial scoring: an int from doc_to_text switches lm-eval to multiple inputs (Winogrande style)
PARTIAL_FIELDS = "doc_to_text: gold\ndoc_to_target: continuation\ndoc_to_choice: context_options"


def write_task(task_dir: Path, name: str, items) -> None:
    """A local lm-eval task over exactly these items (one JSONL row per item, same order)."""
    data = task_dir / f"{name}.jsonl"
    partial = items[0].is_partial
    with open(data, "w", encoding="utf-8") as f:
        for item in items:
            if partial:
                row = {"context_options": list(item.contexts), "continuation": item.continuation, "gold": item.gold}
            else:
                row = {"query": item.contexts[0], "choices": list(item.choices), "gold": item.gold}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    fields = PARTIAL_FIELDS if partial else MC_FIELDS
    (task_dir / f"{name}.yaml").write_text(TASK_YAML.format(name=name, data=json.dumps(str(data)), fields=fields))


def run_lmeval(lm, task_manager, name: str) -> dict:
    from lm_eval import simple_evaluate

    inner = {"seconds": 0.0}
    original = lm.loglikelihood

    def timed(requests, *args, **kwargs):
        t0 = time.perf_counter()
        try:
            return original(requests, *args, **kwargs)
        finally:
            inner["seconds"] += time.perf_counter() - t0

    lm.loglikelihood = timed
    try:
        t0 = time.perf_counter()
        out = simple_evaluate(model=lm, tasks=[name], task_manager=task_manager, num_fewshot=0, log_samples=True,
                              bootstrap_iters=0, verbosity="ERROR")
        total = time.perf_counter() - t0
    finally:
        lm.loglikelihood = original
    samples = sorted(out["samples"][name], key=lambda s: s["doc_id"])
    logliks = [[float(r[0][0]) for r in s["resps"]] for s in samples]
    return {"seconds": inner["seconds"], "total_seconds": total, "logliks": logliks,
            "acc": [float(s["acc"]) for s in samples], "acc_norm": [float(s["acc_norm"]) for s in samples],
            "metrics": {k.split(",")[0]: v for k, v in out["results"][name].items() if k.split(",")[0] in ("acc", "acc_norm")}}


def run_ours(model, tokenizer, items, batch_size: int) -> dict:
    from curatune.evaluate.multiple_choice import score_multiple_choice

    t0 = time.perf_counter()
    result = score_multiple_choice(model, tokenizer, items, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "logliks": [r["logliks"] for r in result.per_item],
            "acc": [r["acc"] for r in result.per_item], "acc_norm": [r["acc_norm"] for r in result.per_item],
            "metrics": result.metrics}


def build_tiny(out: Path) -> Path:
    """A ~5M-parameter random Llama with the embedded model's tokenizer (realistic token counts)."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from curatune.models import resolve_model_path

    tok = AutoTokenizer.from_pretrained(resolve_model_path("default"))
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, tie_word_embeddings=True)
    LlamaForCausalLM(config).save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model name or local directory (curatune.models)")
    parser.add_argument("--tiny", action="store_true", help="use a 5M-parameter random Llama instead")
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "piqa", "winogrande", "hellaswag"],
                        help="files in ../shared/data/bench/mc, or hellaswag (the HellaSwag text file)")
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="torch threads for both contenders")
    parser.add_argument("--out", default=None, help="results JSON (default bench/results/eval_lmeval[_tiny].json)")
    parser.add_argument("--render", metavar="JSON", help="only re-render the Markdown table of a results JSON")
    args = parser.parse_args(argv)
    if args.render:
        from curatune.rundir import atomic_write_text, read_json

        atomic_write_text(Path(args.render).with_suffix(".md"), render_markdown(read_json(args.render)))
        return 0

    try:
        import lm_eval
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        print("lm-eval is not installed: pip install lm-eval", file=sys.stderr)
        return 2
    if not SHARED_MC.exists():
        print(f"shared data not found at {SHARED_MC}", file=sys.stderr)
        return 2
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curatune.evaluate.multiple_choice import load_mc_items
    from curatune.models import resolve_model_path

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="curatune-bench-lmeval-"))
    model_dir = build_tiny(work / "tiny-model") if args.tiny else resolve_model_path(args.model)
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=args.batch_size)
    task_dir = work / "tasks"
    task_dir.mkdir()
    items_by_task = {}
    for name in args.tasks:
        source = HELLASWAG if name == "hellaswag" else SHARED_MC / f"{name}.jsonl"
        items_by_task[name] = load_mc_items(source, limit=args.limit, seed=0)
        write_task(task_dir, f"curatune_bench_{name}", items_by_task[name])
    task_manager = TaskManager(include_path=str(task_dir))

    # warm-up (first forward passes allocate; not timed)
    warm = items_by_task[args.tasks[0]][:4]
    run_ours(model, tokenizer, warm, args.batch_size)

    report = {"model": str(model_dir), "tiny": args.tiny, "limit": args.limit, "batch_size": args.batch_size,
              "threads": args.threads, "rounds": args.rounds, "dtype": "float32", "device": "cpu",
              "versions": {"lm_eval": getattr(lm_eval, "__version__", "?"), "torch": torch.__version__,
                           "transformers": transformers.__version__, "python": platform.python_version()},
              "cpus": os.cpu_count(), "tasks": {}}
    for name in args.tasks:
        items = items_by_task[name]
        runs = {"lm_eval": [], "curatune": []}
        loads = []
        for r in range(args.rounds):
            order = ["lm_eval", "curatune"] if r % 2 == 0 else ["curatune", "lm_eval"]
            for who in order:
                before = os.getloadavg()[0]
                res = (run_lmeval(lm, task_manager, f"curatune_bench_{name}") if who == "lm_eval"
                       else run_ours(model, tokenizer, items, args.batch_size))
                loads.append([round(before, 2), round(os.getloadavg()[0], 2)])
                runs[who].append(res)
                print(f"[{name}] round {r} {who}: {len(items) / res['seconds']:.2f} items/s "
                      f"(load {loads[-1]})", flush=True)
        ours, theirs = runs["curatune"][0], runs["lm_eval"][0]
        diffs = [abs(a - b) for x, y in zip(ours["logliks"], theirs["logliks"]) for a, b in zip(x, y)]
        rel = [abs(a - b) / max(abs(b), 1e-12) for x, y in zip(ours["logliks"], theirs["logliks"]) for a, b in zip(x, y)]
        n = len(items)
        speed = {who: [n / res["seconds"] for res in rs] for who, rs in runs.items()}
        ratios = [c / l for c, l in zip(speed["curatune"], speed["lm_eval"])]
        report["tasks"][name] = {
            "items": n,
            "choices": sum(len(i.choices) for i in items),
            "acc_identical": ours["acc"] == theirs["acc"],
            "acc_norm_identical": ours["acc_norm"] == theirs["acc_norm"],
            "items_with_different_prediction": sum(a != b or c != d for a, b, c, d in
                                                   zip(ours["acc"], theirs["acc"], ours["acc_norm"], theirs["acc_norm"])),
            "max_abs_loglik_diff": max(diffs),
            "max_rel_loglik_diff": max(rel),
            "metrics": {"curatune": ours["metrics"], "lm_eval": theirs["metrics"]},
            "items_per_s": {"curatune": speed["curatune"], "lm_eval": speed["lm_eval"],
                            "lm_eval_including_harness": [n / res["total_seconds"] for res in runs["lm_eval"]]},
            "speed_ratio_per_round": ratios,
            "speed_ratio_median": statistics.median(ratios),
            "load_average_1min": loads,
        }
        print(json.dumps({k: v for k, v in report["tasks"][name].items() if k != "load_average_1min"}, indent=1))

    out = Path(args.out) if args.out else RESULTS / ("eval_lmeval_tiny.json" if args.tiny else "eval_lmeval.json")
    from curatune.rundir import atomic_write_json, atomic_write_text

    atomic_write_json(out, report)
    atomic_write_text(out.with_suffix(".md"), render_markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def render_markdown(report: dict) -> str:
    lines = [
        f"# curatune multiple choice vs lm-evaluation-harness {report['versions']['lm_eval']}",
        "",
        f"Model `{Path(report['model']).name}`{' (random tiny Llama)' if report['tiny'] else ''}, float32, CPU, "
        f"{report['threads']} torch thread(s), batch size {report['batch_size']}, {report['rounds']} interleaved rounds; "
        f"torch {report['versions']['torch']}, transformers {report['versions']['transformers']}.",
        "",
        "| task | items | predictions identical (acc / acc_norm) | max abs loglik diff | max rel loglik diff | "
        "acc (ours / lm-eval) | acc_norm (ours / lm-eval) | items/s curatune | items/s lm-eval | ratio (median) | "
        "load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in report["tasks"].items():
        m = t["metrics"]
        fmt = lambda xs: " / ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        load = [x for pair in t["load_average_1min"] for x in pair]
        lines.append(
            f"| {name} | {t['items']} | {t['acc_identical']} / {t['acc_norm_identical']} | {t['max_abs_loglik_diff']:.2e} | "
            f"{t['max_rel_loglik_diff']:.1e} | "
            f"{m['curatune']['acc']:.3f} / {m['lm_eval']['acc']:.3f} | {m['curatune']['acc_norm']:.3f} / {m['lm_eval']['acc_norm']:.3f} | "
            f"{fmt(t['items_per_s']['curatune'])} | {fmt(t['items_per_s']['lm_eval'])} | {t['speed_ratio_median']:.2f}x | "
            f"{min(load):.1f}-{max(load):.1f} |"
        )
    lines += ["", "Items/s per round; lm-eval's is timed inside its loglikelihood call (tokenization included), "
              "so harness overhead is not counted against it.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
