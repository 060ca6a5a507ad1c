"""The lm_eval suite kind vs EleutherAI lm-evaluation-harness run directly, item by item.

Task YAMLs in lm-eval's own format over the files in ../shared/data (written to a temporary
folder; the data is read where it is, never copied):

* ``arc_easy``, ``arc_challenge`` (llm-foundry rows {query, choices, gold}): lm-eval's ARC
  prompt ("Question: ...\\nAnswer:" + " " + choice), few-shot examples from the same file;
* ``gsm8k``: lm-eval's own ``tasks/gsm8k/gsm8k.yaml`` with its hub dataset replaced by the local
  test and train files of openai/grade-school-math (few-shot from train, the strict-match and
  flexible-extract filters, exact match).

Both contenders score the same documents (a seeded subset, curatune's ``limit``) with the same
model in float32 on CPU, one torch thread each:

* reference: ``lm_eval.simple_evaluate`` with ``HFLM`` loading the model from its folder;
* curatune: the ``lm_eval`` suite (``LmEvalTask.score``) on the model curatune loaded, with the
  default ``scorer: curatune`` (log-likelihood requests through curatune's shared-prefix scorer;
  generation through HFLM).

Reported: per-item predictions and metric values identical, the largest log-likelihood difference,
the prompts identical, the corpus metrics, each contender's wall time and the load average. Both
skip lm-eval's environment report (pip, nvidia-smi, git subprocesses), so the times compare scoring.

    nice python bench/eval_lmeval_tasks.py                          # SmolLM2-135M-Instruct
    nice python bench/eval_lmeval_tasks.py --tasks arc_easy --limit 10   # a quick check
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
MC_FILES = {"arc_easy": SHARED / "bench/mc/arc_easy.jsonl", "arc_challenge": SHARED / "bench/mc/arc_challenge.jsonl"}
GSM8K = SHARED / "instruct/gsm8k/grade_school_math/data"
RESULTS = REPO / "bench" / "results"

MC_YAML = """task: {name}
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
output_type: multiple_choice
test_split: test
fewshot_split: test
doc_to_text: "{{{{query}}}}\\nAnswer:"
doc_to_target: gold
doc_to_choice: choices
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


class Timer:
    """Seconds spent inside the model calls lm-eval makes (loglikelihood, generate_until) of an
    object or class, so that task building and model loading are not counted."""

    def __init__(self, owner):
        self.owner, self.seconds, self.saved = owner, 0.0, {}

    def __enter__(self):
        for name in ("loglikelihood", "generate_until"):
            original = getattr(self.owner, name)
            self.saved[name] = self.owner.__dict__.get(name)

            def timed(*a, _original=original, **k):
                t0 = time.perf_counter()
                try:
                    return _original(*a, **k)
                finally:
                    self.seconds += time.perf_counter() - t0
            setattr(self.owner, name, timed)
        return self

    def __exit__(self, *exc):
        for name, saved in self.saved.items():
            if saved is None:
                delattr(self.owner, name)
            else:
                setattr(self.owner, name, saved)


def write_tasks(folder: Path, names: list[str]) -> None:
    import lm_eval

    for name in names:
        if name in MC_FILES:
            (folder / f"{name}.yaml").write_text(
                MC_YAML.format(name=f"bench_{name}", data=json.dumps(str(MC_FILES[name]))), encoding="utf-8")
        elif name == "gsm8k":
            # lm-eval's own gsm8k task, its hub dataset swapped for the local files
            text = (Path(lm_eval.__file__).parent / "tasks/gsm8k/gsm8k.yaml").read_text(encoding="utf-8")
            local = ("dataset_path: json\ndataset_kwargs:\n  data_files:\n"
                     f"    train: {json.dumps(str(GSM8K / 'train.jsonl'))}\n"
                     f"    test: {json.dumps(str(GSM8K / 'test.jsonl'))}\n")
            assert "dataset_path: openai/gsm8k\ndataset_name: main\n" in text, "lm-eval's gsm8k.yaml changed"
            text = text.replace("dataset_path: openai/gsm8k\ndataset_name: main\n", local)
            text = text.replace("task: gsm8k", "task: bench_gsm8k").replace("tag:\n  - math_word_problems\n", "")
            (folder / "gsm8k.yaml").write_text(text, encoding="utf-8")
        else:
            raise SystemExit(f"unknown task {name}")


def run_reference(model_dir: Path, folder: Path, task: str, doc_ids: list[int], args) -> dict:
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from curatune.evaluate.lmeval_tasks import _no_environment_report

    t0 = time.perf_counter()
    lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=args.batch_size)
    manager = TaskManager(include_path=str(folder), include_defaults=False)
    with _no_environment_report(), Timer(lm) as timer:
        out = simple_evaluate(model=lm, tasks=[task], task_manager=manager, num_fewshot=args.num_fewshot,
                              samples={task: doc_ids}, log_samples=True, bootstrap_iters=0,
                              gen_kwargs=_gen_kwargs(args, task))
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "model_seconds": timer.seconds, "samples": out["samples"][task],
            "results": out["results"][task]}


def run_curatune(model, tokenizer, yaml_path: Path, name: str, args) -> dict:
    from curatune.config import validate_config
    from curatune.evaluate.config import LmEvalSuite
    from curatune.evaluate.lmeval_tasks import _lm_class
    from curatune.evaluate.suites import EvalContext, LmEvalTask

    config = validate_config({"evaluate": {"seed": 0}})
    spec = LmEvalSuite(name=name, path=str(yaml_path), num_fewshot=args.num_fewshot, limit=args.limit_for(name),
                       batch_size=args.batch_size, gen_kwargs=_gen_kwargs(args, name) or {})
    t0 = time.perf_counter()
    suite = LmEvalTask(spec, EvalContext(config, run_dir=None, progress=False))
    loaded = suite.items  # builds the task (the runner does it once per run, for every model)
    with Timer(_lm_class()) as timer:
        score = suite.score(model, tokenizer, "base")
    seconds = time.perf_counter() - t0
    buffer = io.BytesIO()
    score.samples.to_parquet(buffer)
    return {"seconds": seconds, "model_seconds": timer.seconds, "samples": score.samples, "metrics": score.metrics,
            "signature":
            next(iter(score.signatures.values())), "doc_ids": loaded.doc_ids, "parquet_bytes": buffer.tell()}


def _gen_kwargs(args, task: str) -> dict | None:
    return {"max_gen_toks": args.max_gen_toks} if "gsm8k" in task and args.max_gen_toks else None


def compare(name: str, ours: dict, theirs: dict) -> dict:
    import numpy as np

    reference = {int(s["doc_id"]): s for s in theirs["samples"] if s.get("filter", "none") in ("none", "strict-match")}
    frame = ours["samples"]
    ids = [int(x.split("/")[-1]) for x in frame["example_id"]]
    assert sorted(ids) == sorted(reference), "the two scored different documents"
    row = {"items": len(ids), "prompts_identical": all(p == reference[i]["arguments"][0][0]
                                                       for p, i in zip(frame["prompt"], ids))}
    metrics = {}
    if "logliks" in frame.columns:
        theirs_ll = [[float(r[0]) for r in reference[i]["filtered_resps"]] for i in ids]
        diffs = [abs(a - b) for x, y in zip(frame["logliks"], theirs_ll) for a, b in zip(x, y)]
        row["max_abs_loglik_diff"] = max(diffs)
        row["choices_scored"] = len(diffs)
        for metric in ("acc", "acc_norm"):
            mine, ref = list(frame[metric]), [float(reference[i][metric]) for i in ids]
            row[f"{metric}_identical"] = mine == ref
            metrics[metric] = {"curatune": float(np.mean(mine)), "lm_eval": theirs["results"][f"{metric},none"]}
    else:
        outputs = [reference[i]["resps"][0][0] for i in ids]
        row["outputs_identical"] = list(frame["output"]) == outputs
        row["extracted_identical"] = list(frame["extracted"]) == [reference[i]["filtered_resps"][0] for i in ids]
        mine, ref = list(frame["exact_match"]), [float(reference[i]["exact_match"]) for i in ids]
        row["exact_match_identical"] = mine == ref
        metrics["exact_match (strict-match)"] = {"curatune": ours["metrics"]["exact_match"],
                                                 "lm_eval": theirs["results"]["exact_match,strict-match"]}
        metrics["exact_match (flexible-extract), lm-eval only"] = {
            "curatune": None, "lm_eval": theirs["results"]["exact_match,flexible-extract"]}
    row["metrics"] = metrics
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="default", help="model name or local directory (curatune.models)")
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "arc_challenge", "gsm8k"])
    parser.add_argument("--limit", type=int, default=60, help="documents per multiple-choice task")
    parser.add_argument("--gsm8k-limit", type=int, default=16, help="documents of gsm8k (generation is slow on CPU)")
    parser.add_argument("--num-fewshot", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-gen-toks", type=int, default=0, help="gsm8k generation budget (0 = the task's 256)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=str(RESULTS / "eval_lmeval_tasks.json"))
    parser.add_argument("--render", metavar="JSON", help="only re-render the Markdown table of a results JSON")
    args = parser.parse_args(argv)
    if args.render:
        from curatune.rundir import atomic_write_text, read_json

        atomic_write_text(Path(args.render).with_suffix(".md"), render_markdown(read_json(args.render)))
        return 0
    args.limit_for = lambda name: args.gsm8k_limit if "gsm8k" in name else args.limit
    try:
        import lm_eval
    except ImportError:
        print("lm-eval is not installed: pip install 'curatune[lmeval]'", file=sys.stderr)
        return 2
    if not SHARED.exists():
        print(f"shared data not found at {SHARED}", file=sys.stderr)
        return 2
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curatune.models import resolve_model_path
    from curatune.rundir import atomic_write_json, atomic_write_text

    torch.set_num_threads(args.threads)
    model_dir = Path(resolve_model_path(args.model))
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    folder = Path(tempfile.mkdtemp(prefix="curatune-bench-lmeval-tasks-"))
    write_tasks(folder, args.tasks)

    report = {"model": model_dir.name, "num_fewshot": args.num_fewshot, "batch_size": args.batch_size,
              "threads": args.threads, "dtype": "float32", "device": "cpu", "cpus": os.cpu_count(),
              "versions": {"lm_eval": lm_eval.__version__, "torch": torch.__version__,
                           "transformers": transformers.__version__, "python": platform.python_version()},
              "tasks": {}}
    for k, name in enumerate(args.tasks):
        task = f"bench_{name}"
        yaml_path = folder / f"{name}.yaml"
        runs, loads = {}, {}
        order = ["curatune", "lm_eval"] if k % 2 == 0 else ["lm_eval", "curatune"]  # alternate who goes first
        for who in order:
            before = os.getloadavg()[0]
            if who == "curatune":
                runs[who] = run_curatune(model, tokenizer, yaml_path, task, args)
            else:
                doc_ids = runs["curatune"]["doc_ids"][task] if "curatune" in runs else None
                if doc_ids is None:  # the subset curatune's limit picks (same function, same seed)
                    from lm_eval.tasks import TaskManager

                    from curatune.evaluate.suites import select_subset

                    n = len(TaskManager(include_path=str(folder), include_defaults=False).load([task])["tasks"][task].eval_docs)
                    doc_ids = select_subset(n, args.limit_for(task), 0)
                runs[who] = run_reference(model_dir, folder, task, doc_ids, args)
            loads[who] = [round(before, 2), round(os.getloadavg()[0], 2)]
            print(f"[{name}] {who}: {runs[who]['seconds']:.1f} s (load {loads[who]})", flush=True)
        row = compare(name, runs["curatune"], runs["lm_eval"])
        row.update({"seconds": {w: round(r["seconds"], 2) for w, r in runs.items()},
                    "model_seconds": {w: round(r["model_seconds"], 2) for w, r in runs.items()},
                    "speed_ratio": round(runs["lm_eval"]["model_seconds"] / runs["curatune"]["model_seconds"], 2),
                    "load_average_1min": loads, "signature": runs["curatune"]["signature"],
                    "samples_parquet_bytes": runs["curatune"]["parquet_bytes"]})
        report["tasks"][name] = row
        print(json.dumps(row, indent=1), flush=True)

    out = Path(args.out)
    atomic_write_json(out, report)
    atomic_write_text(out.with_suffix(".md"), render_markdown(report))
    print(f"wrote {out} and {out.with_suffix('.md')}")
    return 0


def render_markdown(report: dict) -> str:
    v = report["versions"]
    lines = [
        f"# lm_eval suite kind vs lm-evaluation-harness {v['lm_eval']} run directly",
        "",
        f"Model `{report['model']}`, float32, CPU, {report['threads']} torch thread(s), batch size "
        f"{report['batch_size']}, {report['num_fewshot']}-shot; torch {v['torch']}, transformers {v['transformers']}. "
        "Task YAMLs in lm-eval's format over ../shared/data (gsm8k: lm-eval's own gsm8k.yaml with the local files); "
        "the same seeded documents for both. `bench/eval_lmeval_tasks.py`.",
        "",
        "| task | items | identical per item | max abs loglik diff | prompts identical | metric: curatune / lm-eval | "
        "model seconds: curatune / lm-eval | lm-eval / curatune | whole call seconds: curatune / lm-eval | "
        "load avg (1 min) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, t in report["tasks"].items():
        same = [k.replace("_identical", "") for k in t if k.endswith("_identical") and k != "prompts_identical"]
        identical = ", ".join(f"{k}: {t[k + '_identical']}" for k in same)
        metrics = "; ".join(f"{m} {_fmt(x['curatune'])} / {_fmt(x['lm_eval'])}" for m, x in t["metrics"].items())
        loads = [x for pair in t["load_average_1min"].values() for x in pair]
        diff = f"{t['max_abs_loglik_diff']:.2e}" if "max_abs_loglik_diff" in t else "(generation)"
        lines.append(f"| {name} | {t['items']} | {identical} | {diff} | {t['prompts_identical']} | {metrics} | "
                     f"{t['model_seconds']['curatune']} / {t['model_seconds']['lm_eval']} | {t['speed_ratio']}x | "
                     f"{t['seconds']['curatune']} / {t['seconds']['lm_eval']} | {min(loads):.1f}-{max(loads):.1f} |")
    lines += ["", "Model seconds: time inside the loglikelihood / generate_until calls lm-eval makes (tokenization "
              "included; the speed ratio is of these). Whole call: lm-eval: HFLM loading the model from its folder, "
              "building the task, simple_evaluate; curatune: building the task (LmEvalTask.items) and LmEvalTask.score "
              "(the already-loaded model in HFLM, simple_evaluate). One run each, alternating who goes first, on a "
              "shared machine (see the load). Signatures:", ""]
    lines += [f"- {name}: `{t['signature']}`" for name, t in report["tasks"].items()]
    lines += ["", "Generation (gsm8k) runs the same HFLM code in both contenders (only log-likelihood requests take "
              "curatune's scorer); its times come from one run each on a loaded machine and are not a speed comparison.",
              "", "Samples file per model (parquet, whole few-shot prompts kept): "
              + ", ".join(f"{name} {t['samples_parquet_bytes'] / t['items'] / 1024:.1f} KiB per item"
                          for name, t in report["tasks"].items()) + ".", ""]
    return "\n".join(lines)


def _fmt(x) -> str:
    return "-" if x is None else f"{x:.3f}"


if __name__ == "__main__":
    sys.exit(main())
