"""How many token positions each multiple-choice scorer runs through the model: the cost floor.

bench/eval_lmeval.py measures curatune's scorer 2.6x lm-evaluation-harness's speed on ARC-Easy
but only 1.2x on PIQA. Timings on this shared machine are noisy; token counts are not. This
script runs both scorers through their real code paths on the same items and counts, with a
forward pre-hook on the model, every forward call and every token position it is given:

* ``padded``: input positions including padding (what a CPU pays for, roughly linearly in a
  small model whose cost is dominated by its weight matrices);
* ``real``: the non-padding positions;
* ``floor``: what any exact scorer must run at least: each item's shared context once plus
  each choice's own tokens once (the last token of a sequence is never an input). A scorer
  that shares the context (curatune) cannot go below it; one that does not (lm-eval) runs the
  context once per choice.

The model is a 5M-parameter random Llama with the embedded SmolLM2 tokenizer (token counts do
not depend on the weights, only on the tokenizer and the batching), so this takes seconds.
The ratio lm-eval padded / curatune padded is the speed-up the token counts allow; set beside
the measured speed ratio it says whether curatune is at its floor for a suite.

    python bench/eval_mc_tokens.py [--limit 150] [--batch-size 16]
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "bench"))
sys.path.insert(0, str(REPO))

from eval_lmeval import (  # noqa: E402
    HELLASWAG,
    RESULTS,
    SHARED_MC,
    build_tiny,
    run_lmeval,
    run_ours,
    write_task,
)

from curatune.evaluate.lm_scoring import _common_prefix_len  # noqa: E402  (the scorer's own prefix rule)


class TokenCounter:
    """Counts forward calls and input positions through a forward pre-hook."""

    def __init__(self, model):
        self.calls = self.padded = self.real = 0
        model.register_forward_pre_hook(self._hook, with_kwargs=True)

    def _hook(self, module, args, kwargs):
        ids = kwargs.get("input_ids", args[0] if args else None)
        mask = kwargs.get("attention_mask")
        self.calls += 1
        self.padded += int(ids.numel())
        # a pass on top of a KV cache gets a mask over cache + new positions: count the new ones
        self.real += int(mask[:, -ids.shape[1]:].sum()) if mask is not None else int(ids.numel())

    def take(self) -> dict:
        out = {"calls": self.calls, "padded": self.padded, "real": self.real}
        self.calls = self.padded = self.real = 0
        return out


def floor_tokens(scorer, items) -> int:
    """Each item's shared input prefix once plus each choice's remaining inputs once, with the
    requests tokenized exactly as both scorers tokenize them."""
    total = 0
    for item in items:
        inputs = []
        for context, continuation in item.requests():
            request = scorer.encode_pair(context, continuation)
            inputs.append((request.context + request.continuation)[:-1])
        shared = _common_prefix_len(inputs)
        total += shared + sum(len(s) - shared for s in inputs)
    return total


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", nargs="+", default=["arc_easy", "piqa", "winogrande", "hellaswag"])
    parser.add_argument("--limit", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--speed", type=Path, default=RESULTS / "eval_lmeval.json",
                        help="measured speed ratios to set beside the token ratios")
    args = parser.parse_args(argv)
    try:
        from lm_eval.models.huggingface import HFLM
        from lm_eval.tasks import TaskManager
    except ImportError:
        print("lm-eval is not installed: pip install lm-eval", file=sys.stderr)
        return 2
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from curatune.evaluate.lm_scoring import LoglikelihoodScorer
    from curatune.evaluate.multiple_choice import load_mc_items
    from curatune.rundir import atomic_write_json, atomic_write_text

    torch.set_num_threads(1)
    work = Path(tempfile.mkdtemp(prefix="curatune-bench-mc-tokens-"))
    model_dir = build_tiny(work / "tiny-model")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    lm = HFLM(pretrained=str(model_dir), dtype="float32", device="cpu", batch_size=args.batch_size)
    ours_count, theirs_count = TokenCounter(model), TokenCounter(lm.model)
    speed = json.loads(args.speed.read_text())["tasks"] if args.speed.exists() else {}

    (work / "tasks").mkdir()
    report = {"limit": args.limit, "batch_size": args.batch_size, "tokenizer": "SmolLM2-135M-Instruct",
              "speed_from": str(args.speed.relative_to(REPO)) if args.speed.exists() else None, "tasks": {}}
    for name in args.tasks:
        items = load_mc_items(HELLASWAG if name == "hellaswag" else SHARED_MC / f"{name}.jsonl", limit=args.limit, seed=0)
        write_task(work / "tasks", f"curatune_bench_{name}", items)
        ours = run_ours(model, tokenizer, items, args.batch_size)
        ours_tokens = ours_count.take()
        theirs = run_lmeval(lm, TaskManager(include_path=str(work / "tasks")), f"curatune_bench_{name}")
        theirs_tokens = theirs_count.take()
        same = ours["acc"] == theirs["acc"] and ours["acc_norm"] == theirs["acc_norm"]
        floor = floor_tokens(LoglikelihoodScorer(model, tokenizer), items)
        report["tasks"][name] = {
            "items": len(items), "choices": sum(len(i.choices) for i in items), "predictions_identical": same,
            "curatune": ours_tokens, "lm_eval": theirs_tokens, "floor": floor,
            "token_ratio": theirs_tokens["padded"] / ours_tokens["padded"],
            "curatune_over_floor": ours_tokens["padded"] / floor,
            "lm_eval_over_floor": theirs_tokens["padded"] / floor,
            "measured_speed_ratio": speed.get(name, {}).get("speed_ratio_median"),
        }
        print(name, json.dumps(report["tasks"][name]), flush=True)
    atomic_write_json(RESULTS / "eval_mc_tokens.json", report)
    atomic_write_text(RESULTS / "eval_mc_tokens.md", render(report))
    print(f"wrote {RESULTS / 'eval_mc_tokens.md'}")
    return 0


def render(report: dict) -> str:
    lines = [
        "# Token positions each multiple-choice scorer runs (bench/eval_mc_tokens.py)",
        "",
        f"{report['limit']} items per suite, batch size {report['batch_size']}, tokenizer {report['tokenizer']}, "
        "counted with a forward pre-hook on the model (a 5M random Llama; counts depend only on the tokenizer and "
        "the batching). padded = input positions including padding; floor = each item's shared context once plus "
        "each choice's own tokens once. Measured speed ratio (curatune / lm-eval, 135M model, wall time) from "
        f"`{report['speed_from']}`.",
        "",
        "| suite | items | choices | predictions identical | curatune calls | curatune padded | lm-eval calls | "
        "lm-eval padded | floor | curatune / floor | lm-eval / floor | token ratio (lm-eval / curatune) | "
        "measured speed ratio |",
        "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, t in report["tasks"].items():
        speed = t["measured_speed_ratio"]
        lines.append(
            f"| {name} | {t['items']} | {t['choices']} | {t['predictions_identical']} | {t['curatune']['calls']} | "
            f"{t['curatune']['padded']:,} | {t['lm_eval']['calls']} | {t['lm_eval']['padded']:,} | {t['floor']:,} | "
            f"{t['curatune_over_floor']:.2f} | {t['lm_eval_over_floor']:.2f} | {t['token_ratio']:.2f}x | "
            f"{'—' if speed is None else f'{speed:.2f}x'} |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
