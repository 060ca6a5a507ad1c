"""Task-suite greedy generation: curatune's decoder vs transformers' ``generate``, side by side.

The workload is the Multi30k study's task suite: 300 test_2016_flickr sentences (the study's
seed-0 subset), formatted by the model's chat template, greedy, ``max_new_tokens`` 96, stop
at a newline. Contenders, each on the same prompts in one process, interleaved round by round
so the shared machine's load hits all alike:

* ``generate@16``: transformers' ``model.generate`` on the sorted, left-padded batches of 16
  (what curatune did before; finished rows stay in the batch until the slowest answer ends);
* ``curatune@16``: curatune's decoder (finished rows leave the batch), batch 16;
* ``generate@64`` and ``curatune@64``: both at batch 64 (a larger batch streams the weights once for
  more rows, which is what a small model on a CPU is bound by);
* ``curatune@128`` and ``curatune@300`` (the whole workload in one batch): larger still (memory
  grows with rows x tokens: 300 rows of the 135M model's KV cache is ~2 GB at these lengths).

Correctness first: every contender's outputs are compared with ``generate@16``'s, item by
item; a speed is only reported beside how many outputs are identical. Speed is generated
(new) tokens per second, tokens counted on the reference outputs so every contender is
credited the same work.

    nice python bench/eval_generation.py                         # base SmolLM2-135M-Instruct
    nice python bench/eval_generation.py --cell runs/x/cells/...  # a fine-tuned cell as well
    python bench/eval_generation.py --limit 40 --rounds 1          # quick check
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import transformers
from transformers import GenerationConfig, StoppingCriteria, StoppingCriteriaList

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
MULTI30K = REPO.parent / "shared" / "data" / "mt" / "multi30k" / "data" / "task1" / "raw"
RESULTS = REPO / "bench" / "results"

from curatune.data.loaders import load_sources  # noqa: E402
from curatune.evaluate.generation import (  # noqa: E402
    GenerationSettings,
    cut_at_stop,
    encode_prompts,
    eos_token_ids,
    format_prompt,
    generate,
)
from curatune.evaluate.suites import select_subset  # noqa: E402
from curatune.models import (  # noqa: E402
    load_model_and_tokenizer,
    load_weights_dir,
    resolve_model_path,
)


def workload(tokenizer, limit: int) -> list[str]:
    result = load_sources([{"path": str(MULTI30K / "test_2016_flickr.en.gz"), "format": "parallel",
                            "target_path": str(MULTI30K / "test_2016_flickr.de.gz")}])
    records = [r for r in result.records if any(m["role"] == "assistant" for m in r.messages)]
    chosen = [records[i] for i in select_subset(len(records), limit, 0)]
    return [format_prompt(tokenizer, r.messages) for r in chosen]


class _StopStrings(StoppingCriteria):
    """curatune's previous stopping criterion: a row is done once its new text holds a stop string."""

    def __init__(self, tokenizer, stops, prompt_length):
        self.tokenizer, self.stops, self.prompt_length = tokenizer, [s for s in stops if s], prompt_length

    def __call__(self, input_ids, scores, **kwargs):
        texts = self.tokenizer.batch_decode(input_ids[:, self.prompt_length:], skip_special_tokens=True)
        return torch.tensor([any(s in t for s in self.stops) for t in texts], dtype=torch.bool,
                            device=input_ids.device)


@torch.inference_mode()
def transformers_generate(model, tokenizer, prompts, settings: GenerationSettings) -> list[str]:
    """curatune's previous path (v1 code, verbatim in effect): sorted, left-padded batches through
    ``model.generate`` with a stop-string criterion."""
    eos = eos_token_ids(model, tokenizer)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos[0]
    config = GenerationConfig(do_sample=False, num_beams=1, max_new_tokens=settings.max_new_tokens,
                              eos_token_id=eos, pad_token_id=pad, temperature=None, top_p=None, top_k=None,
                              use_cache=True)
    encoded = encode_prompts(tokenizer, prompts)
    order = sorted(range(len(encoded)), key=lambda i: (-len(encoded[i]), i))
    outputs = [""] * len(prompts)
    for start in range(0, len(order), settings.batch_size):
        batch = order[start:start + settings.batch_size]
        width = max(len(encoded[i]) for i in batch)
        ids = torch.full((len(batch), width), pad, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, i in enumerate(batch):
            ids[row, width - len(encoded[i]):] = torch.tensor(encoded[i])
            mask[row, width - len(encoded[i]):] = 1
        stopping = StoppingCriteriaList([_StopStrings(tokenizer, settings.stop, width)] if settings.stop else [])
        generated = model.generate(input_ids=ids, attention_mask=mask, generation_config=config,
                                   stopping_criteria=stopping)
        for row, i in enumerate(batch):
            new = generated[row, width:].tolist()
            new = new[:next((k for k, t in enumerate(new) if t in eos), len(new))]
            outputs[i] = cut_at_stop(tokenizer.decode(new, skip_special_tokens=True), settings.stop).strip()
    return outputs


def contenders(max_new_tokens: int, stop: list[str], chosen: list[str]):
    """The contenders by name; ``chosen`` a subset (the first is the reference), empty for all."""
    def ours(batch):
        settings = GenerationSettings(max_new_tokens, batch, stop)
        return lambda m, t, p: generate(m, t, p, settings, progress=False).outputs

    def theirs(batch):
        settings = GenerationSettings(max_new_tokens, batch, stop)
        return lambda m, t, p: transformers_generate(m, t, p, settings)

    every = {"generate@16": theirs(16), "curatune@16": ours(16), "generate@64": theirs(64), "curatune@64": ours(64),
             "curatune@128": ours(128), "curatune@300": ours(300)}
    return {name: every[name] for name in chosen or every}


def load_avg() -> float:
    return os.getloadavg()[0]


def measure(label: str, model, tokenizer, prompts, rounds: int, max_new_tokens: int, stop: list[str],
            chosen: list[str]) -> dict:
    runs = contenders(max_new_tokens, stop, chosen)
    names = list(runs)
    times: dict[str, list[float]] = {n: [] for n in names}
    loads: dict[str, list[float]] = {n: [] for n in names}
    outputs: dict[str, list[str]] = {}
    for r in range(rounds):
        for name in (names if r % 2 == 0 else names[::-1]):
            loads[name].append(load_avg())
            start = time.perf_counter()
            outputs[name] = runs[name](model, tokenizer, prompts)
            times[name].append(time.perf_counter() - start)
            print(f"  {label} round {r} {name}: {times[name][-1]:.1f} s (load {loads[name][-1]:.1f})", flush=True)
    reference = outputs[names[0]]
    new_tokens = sum(len(tokenizer(o, add_special_tokens=False)["input_ids"]) for o in reference)
    base_time = statistics.median(times[names[0]])
    rows = []
    for name in names:
        same = sum(a == b for a, b in zip(outputs[name], reference))
        median = statistics.median(times[name])
        rows.append({"model": label, "contender": name, "identical_outputs": same, "items": len(prompts),
                     "seconds": [round(t, 2) for t in times[name]], "new_tokens": new_tokens,
                     "new_tokens_per_s": round(new_tokens / median, 1),
                     "speedup_vs_reference": round(base_time / median, 2),
                     "load_avg_1min": [round(x, 1) for x in loads[name]]})
    return {"rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--max-new-tokens", type=int, default=96)
    parser.add_argument("--contenders", nargs="*", default=[],
                        help="a subset of generate@16 curatune@16 generate@64 curatune@64 curatune@128 curatune@300 "
                        "(first = reference)")
    parser.add_argument("--cell", help="a fine-tuned cell's weights folder (final/) to measure as well")
    parser.add_argument("--out", default=str(RESULTS / "eval_generation"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    stop = ["\n"]

    model, tokenizer = load_model_and_tokenizer("default", dtype="float32", device="cpu")
    model.eval()
    prompts = workload(tokenizer, args.limit)
    results = [measure("base SmolLM2-135M-Instruct", model, tokenizer, prompts, args.rounds, args.max_new_tokens, stop,
                       args.contenders)]
    if args.cell:
        cell_model, cell_tok = load_weights_dir(Path(args.cell), str(resolve_model_path("default")), dtype="float32",
                                                device="cpu")
        cell_model.eval()
        label = f"cell {'-'.join(Path(args.cell).resolve().parts[-4:-1])}"
        results.append(measure(label, cell_model, cell_tok, prompts, args.rounds, args.max_new_tokens, stop,
                               args.contenders))

    meta = {"items": len(prompts), "max_new_tokens": args.max_new_tokens, "stop": stop, "threads": args.threads,
            "rounds": args.rounds, "torch": torch.__version__, "machine": platform.machine(),
            "cpus": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
            "transformers": transformers.__version__}
    rows = [row for r in results for row in r["rows"]]
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# Task-suite greedy generation: curatune's decoder vs transformers `generate`",
        "",
        f"`python bench/eval_generation.py` · {meta['date']} · {meta['items']} Multi30k test_2016_flickr prompts "
        f"(the study's seed-0 subset), greedy, max_new_tokens {args.max_new_tokens}, stop at a newline, float32, "
        f"{args.threads} torch threads, {args.rounds} interleaved rounds; torch {meta['torch']}, transformers "
        f"{meta['transformers']}; machine shared with other jobs (load average per run shown).",
        "",
        "| model | contender | identical outputs (vs the first row) | new tokens/s (median) | speed-up vs the first row | seconds per round | load avg |",
        "|---|---|---|---:|---:|---|---|",
    ]
    for row in rows:
        lines.append(f"| {row['model']} | {row['contender']} | {row['identical_outputs']}/{row['items']} | "
                     f"{row['new_tokens_per_s']} | {row['speedup_vs_reference']}x | "
                     f"{', '.join(map(str, row['seconds']))} | {', '.join(map(str, row['load_avg_1min']))} |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
