"""`curatune evaluate`: score the base model and every trained cell on every suite.

Work is split in *units*: one (model, stage, suite). Models are the base model (stage
``base``) and each trained cell at stage ``early`` and ``final``. Each model is loaded
once and scored on all of its pending suites before the next one loads.

Resume: a finished unit writes its per-example samples, then its part file
``eval/parts/<suite>/<cell>__<stage>.json`` (scores, signatures, fingerprint) atomically,
then ``eval/scores.parquet`` and ``eval/signatures.json`` are rebuilt from the parts, also
atomically. A part whose fingerprint (suite settings, items, generation settings, base
model, the cell's training record) matches is never recomputed; a changed setting
rescoring only what it affects. A killed run therefore loses at most the unit in flight.

:func:`evaluate_hook` scores a cell from inside the sweep (``train.evaluate_hook =
"curatune.evaluate.runner:evaluate_hook"``) while its weights exist, writing the same part
files, so ``curatune evaluate`` later reuses them.
"""
from __future__ import annotations

import gc
import hashlib
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

import pandas as pd
from rich.console import Console
from tqdm.auto import tqdm

from curatune.config import ExperimentConfig
from curatune.errors import ConfigError, CuratuneError
from curatune.evaluate.analysis import analyze_run
from curatune.evaluate.analysis.lr_selection import Criterion, run_selection
from curatune.evaluate.suites import (
    EvalContext,
    Suite,
    SuiteScore,
    build_suites,
    fingerprint_digest,
)
from curatune.models import load_cell_model
from curatune.runcheck import cell_repair_hint
from curatune.rundir import (
    BASE,
    SCORE_COLUMNS,
    RunDir,
    atomic_write_json,
    atomic_write_parquet,
    list_cells,
    read_json,
)
from curatune.runlock import holds_stage_lock
from curatune.terminal import bars_enabled, log_line, quiet_model_loading
from curatune.tracking import cell_steps, log_eval_scores, tracker_problems

STAGE_ORDER = {"base": 0, "early": 1, "final": 2}

console = Console(stderr=True, soft_wrap=True)


# ----------------------------------------------------------------------------- what gets scored


@dataclass(frozen=True)
class Target:
    """One model to score: the base model, or a cell at its early or final stage."""

    cell: str
    method: str
    size: int
    seed: int
    stage: str
    info: Any = field(default=None, compare=False, hash=False)  # CellInfo of a trained cell

    @classmethod
    def base(cls) -> "Target":
        return cls(BASE, BASE, 0, 0, "base")

    @classmethod
    def of_cell(cls, info: Any, stage: str) -> "Target":
        return cls(info.key, info.method, int(info.size), int(info.seed), stage, info)

    @property
    def label(self) -> str:
        return BASE if self.stage == "base" else f"{self.cell}/{self.stage}"

    def identity(self, config: ExperimentConfig) -> dict[str, Any]:
        """What the model's weights depend on, for the resume fingerprint."""
        if self.info is None:
            return {"base": config.model.base, "dtype": config.model.dtype}
        # cell.json is written when training starts and kept; it is there both when the sweep's
        # hook scores the cell (before done.json) and afterwards. A retrained cell rewrites it.
        record = getattr(self.info, "cell", None) or getattr(self.info, "done", None) or {}
        digest = hashlib.sha1(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return {"cell": self.cell, "record": digest, "dtype": config.model.dtype}


@dataclass
class Plan:
    targets: list[Target]
    skipped: dict[str, str] = field(default_factory=dict)  # cell or cell/stage -> why


def plan_targets(config: ExperimentConfig, run_dir: RunDir) -> Plan:
    """The base model and the cells/stages to score, per ``evaluate.stages`` and ``evaluate.cells``."""
    stages = config.evaluate.stages
    plan = Plan([Target.base()] if "base" in stages else [])
    cell_stages = [s for s in ("early", "final") if s in stages]
    if not cell_stages:
        return plan
    cells = list_cells(run_dir)
    not_done = {c.key: c.status for c in cells if c.status != "done"}
    if not_done and config.evaluate.cells == "all":
        listed = ", ".join(f"{k} ({v})" for k, v in sorted(not_done.items()))
        raise ConfigError(
            f"evaluate.cells = all, but these cells are not done: {listed}. Finish the sweep "
            "(`curatune train`) or set evaluate.cells: done to score the finished ones"
        )
    plan.skipped.update({k: f"not done ({v})" for k, v in not_done.items()})
    # Smallest sizes first, every method at a size before the next (as the sweep trains them):
    # an evaluation stopped half-way leaves comparable LoRA and full scores.
    for info in sorted((c for c in cells if c.status == "done"), key=lambda c: (c.size, c.seed, c.method)):
        for stage in cell_stages:
            plan.targets.append(Target.of_cell(info, stage))
    return plan


def _missing_weights(target: Target) -> str | None:
    """Why weights that done.json lists are not on disk (deleted by hand, a copy cut short), or None."""
    if target.info is None:
        return None
    weights = target.info.weights_dir(target.stage)
    if weights is None or Path(weights).is_dir():
        return None
    return (f"done.json lists {target.stage} weights at {weights}, but that folder is missing; "
            f"{cell_repair_hint(target.info.path)}")


def _weights_available(target: Target) -> bool:
    if target.info is None:
        return True
    weights = target.info.weights_dir(target.stage)
    return weights is not None and Path(weights).is_dir()


# ----------------------------------------------------------------------------- results on disk


class PartStore:
    """Finished units as small JSON files, and the merged outputs rebuilt from them."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self._cache: dict[Path, dict[str, Any] | None] = {}  # parts read or written by this process

    def path(self, suite: str, target: Target) -> Path:
        return self.run_dir.part_file(suite, target.cell, target.stage)

    def sample_path(self, suite: str, target: Target) -> Path:
        return self.run_dir.sample_file(suite, target.cell, target.stage)

    def load(self, suite: str, target: Target) -> dict[str, Any] | None:
        path = self.path(suite, target)
        if path not in self._cache:
            try:
                self._cache[path] = read_json(path)
            except FileNotFoundError:
                return None  # not cached: it may appear later (written by the sweep's hook)
            except (json.JSONDecodeError, UnicodeDecodeError):  # not ours (writes are atomic); rescore
                self._cache[path] = None
        return self._cache[path]

    def is_done(self, suite: str, target: Target, fingerprint: str) -> bool:
        part = self.load(suite, target)
        return part is not None and part.get("fingerprint") == fingerprint

    def write(self, suite: str, target: Target, fingerprint: str, score: SuiteScore, seconds: float) -> None:
        # Samples first: the part file is the unit's completion marker.
        atomic_write_parquet(self.sample_path(suite, target), score.samples)
        rows = [
            {
                "cell": target.cell, "method": target.method, "size": target.size, "seed": target.seed,
                "stage": target.stage, "suite": suite, "metric": metric, "value": _float(value),
                "n_items": int(score.n_items.get(metric, len(score.samples))),
            }
            for metric, value in score.metrics.items()
        ]
        part = {
            "fingerprint": fingerprint,
            "rows": rows,
            "signatures": score.signatures,
            "notes": score.notes,
            "seconds": round(seconds, 3),
            "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        atomic_write_json(self.path(suite, target), part)
        self._cache[self.path(suite, target)] = part

    def merge(self, units: Iterable[tuple[str, Target]]) -> pd.DataFrame:
        """Rebuild eval/scores.parquet and eval/signatures.json from the parts of ``units``."""
        rows: list[dict[str, Any]] = []
        signatures: dict[str, dict[str, str]] = {}
        for suite, target in units:
            part = self.load(suite, target)
            if part is None:
                continue
            rows.extend(part["rows"])
            signatures.setdefault(suite, {}).update(part.get("signatures") or {})
        frame = pd.DataFrame(rows, columns=SCORE_COLUMNS)
        frame = frame.astype({"cell": str, "method": str, "size": "int64", "seed": "int64", "stage": str,
                              "suite": str, "metric": str, "value": "float64", "n_items": "int64"})
        frame["_stage"] = frame["stage"].map(STAGE_ORDER)
        frame = frame.sort_values(["suite", "metric", "method", "size", "seed", "_stage"], kind="stable")
        frame = frame.drop(columns="_stage").reset_index(drop=True)
        atomic_write_parquet(self.run_dir.scores, frame)
        atomic_write_json(self.run_dir.signatures, signatures)
        return frame


def _float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


# ----------------------------------------------------------------------------- scoring


class Evaluator:
    """Scores targets on suites, skipping finished units; one instance per run."""

    def __init__(self, config: ExperimentConfig, run_dir: RunDir, *, progress: bool = True):
        self.config = config
        self.run_dir = run_dir
        self.progress = progress
        self.ctx = EvalContext(config, run_dir, progress=progress)
        self.suites: list[Suite] = build_suites(self.ctx)
        self.store = PartStore(run_dir)
        self._suite_prints: dict[str, dict[str, Any]] = {}
        # evaluate.lr_grid_cells = selected: grid cells of a rate that is not selected get the task suites only,
        # and so do all rates of a (method, size) whose grid is still training: its choice may still change,
        # and a full evaluation of a cell that then loses would be wasted (the next evaluate adds it).
        # With evaluate.analysis.lr_select_by SUITE/METRIC, SUITE scores the validation split on every grid cell's
        # final weights (nothing else), and a (method, size) waits until all its cells are scored on it.
        self.task_only_cells: set[str] = set()
        self.unsettled: list[tuple[str, int]] = []
        self.awaiting_scores = False  # some choice waits for validation-suite scores this run can add
        self.training: list[tuple[str, int]] = []  # unsettled because a rate or seed is still training
        self.selection_suite = Criterion.of(config.evaluate.analysis).suite
        if config.evaluate.lr_grid_cells == "selected":
            selection = run_selection(run_dir, config.evaluate.analysis)
            self.unsettled = selection.unsettled
            self.task_only_cells = selection.unselected_cells | selection.cells_of(self.unsettled)
            self.awaiting_scores = selection.awaiting_scores
            self.training = selection.training

    def fingerprint(self, suite: Suite, target: Target) -> str:
        if suite.name not in self._suite_prints:  # loads the suite's items once
            self._suite_prints[suite.name] = suite.fingerprint()
        return fingerprint_digest({"suite": self._suite_prints[suite.name], "model": target.identity(self.config)})

    def suites_for(self, target: Target) -> list[Suite]:
        """The suites that score this target's stage (a suite may be limited to some stages)."""
        suites = [s for s in self.suites if s.spec.stages is None or target.stage in s.spec.stages]
        grid_final = getattr(target.info, "lr", None) is not None and target.stage == "final"
        if not grid_final:  # the validation suite chooses among a grid's final weights, nothing else
            suites = [s for s in suites if s.name != self.selection_suite]
        if target.cell in self.task_only_cells:
            keep = set(self.config.evaluate.analysis.task_suites) | {self.selection_suite}
            suites = [s for s in suites if s.name in keep]
        return suites

    def pending(self, target: Target) -> list[Suite]:
        return [s for s in self.suites_for(target) if not self.store.is_done(s.name, target, self.fingerprint(s, target))]

    def score_unit(self, suite: Suite, target: Target, model: Any, tokenizer: Any) -> float:
        """Score one (suite, target) and store the part; return the seconds it took."""
        started = time.perf_counter()
        score = suite.score(model, tokenizer, target.label)
        seconds = time.perf_counter() - started
        self.store.write(suite.name, target, self.fingerprint(suite, target), score, seconds)
        for note in score.notes:
            console.print(f"[yellow]{target.label} {suite.name}: {note}[/yellow]")
        return seconds

    def load_model(self, target: Target) -> tuple[Any, Any]:
        m = self.config.model
        if target.info is None:
            return self.ctx.base_model()
        return load_cell_model(target.info, target.stage, m.base, dtype=m.dtype, device=m.device)


@holds_stage_lock("eval")  # one process per stage on a run directory
def run_evaluate(config: ExperimentConfig, run_dir: RunDir | str | Path | None = None, *, progress: bool = True,
                 score: bool = True) -> dict[str, Any]:
    """Score every pending unit, rebuild eval/scores.parquet, run the analysis; return a summary.

    ``score=False`` scores nothing: it rebuilds scores.parquet and the analysis from the units
    already scored (``curatune evaluate --merge-only``)."""
    with quiet_model_loading():
        return _run_evaluate(config, run_dir, progress=progress, score=score)


def _run_evaluate(config: ExperimentConfig, run_dir: RunDir | str | Path | None, *, progress: bool,
                  score: bool) -> dict[str, Any]:
    started = time.perf_counter()
    progress = bars_enabled(progress)  # bars on a terminal only: in a log they are escape-code noise
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir or config.run_dir)
    run_dir.root.mkdir(parents=True, exist_ok=True)
    run_dir.write_manifest(config.resolved(), "evaluate")

    done = _score_pass(config, run_dir, progress=progress, score=score)
    if score and done.evaluator.awaiting_scores and done.scored:
        # lr_select_by a validation suite: this pass scored the grid cells on it, so the rates can be
        # chosen now; a second pass gives the selected cells their full evaluation
        console.print("learning rates chosen on the new validation scores: scoring the selected cells")
        done = _score_pass(config, run_dir, progress=progress, score=score, first=done)
    frame = done.evaluator.store.merge(done.units)
    if "tensorboard" in config.train.report_to and done.scored_units:
        # the same tensorboard folder as the cell's training logs (train.report_to)
        problems = tracker_problems(["tensorboard"])
        if problems:
            console.print(f"[yellow]scores not sent to tensorboard: {problems[0]}[/yellow]")
        else:
            log_eval_scores(run_dir, frame, done.scored_units, cell_steps(t.info for t in done.trained))

    analysis = _analyze(run_dir, config)
    summary = {
        "run_dir": str(run_dir.root),
        "models": len(done.plan.targets),
        "suites": [s.name for s in done.evaluator.suites],
        "units": len(done.units),
        "scored": done.scored,
        "reused": done.reused,
        "skipped_cells": done.plan.skipped,
        "unavailable": done.unavailable,
        "failed_models": done.failed,
        "not_scored": done.not_scored,
        "score_rows": int(len(frame)),
        "scores": str(run_dir.scores),
        "analysis": analysis,
        "seconds": round(time.perf_counter() - started, 1),
    }
    if not done.not_scored:  # a merge that left units unscored has not finished the stage
        run_dir.stamp_stage_finished(
            "evaluate", scored=done.scored, reused=done.reused, score_rows=int(len(frame)), analysis=analysis,
            failed_models=done.failed, unavailable=done.unavailable,
        )
    return summary


@dataclass
class _Pass:
    """What one pass over the plan scored (a second pass adds to the first's counts)."""

    plan: Plan
    evaluator: Evaluator
    units: list[tuple[str, Target]]
    scored: int = 0
    reused: int = 0
    not_scored: int = 0
    unavailable: dict[str, list[str]] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    scored_units: list[tuple[str, str, str]] = field(default_factory=list)
    trained: list[Target] = field(default_factory=list)  # cells loaded for scoring


def _score_pass(config: ExperimentConfig, run_dir: RunDir, *, progress: bool, score: bool,
                first: _Pass | None = None) -> _Pass:
    """Plan the targets, choose the grid's rates from what is on disk, score every pending unit."""
    plan = plan_targets(config, run_dir)
    evaluator = Evaluator(config, run_dir, progress=progress)
    if first is None:
        if evaluator.training:
            pairs = ", ".join(f"{method} n={size}" for method, size in evaluator.training)
            console.print(f"[yellow]learning-rate grid still training at {pairs}: their finished cells get the "
                          "task suites now; the selected rate's full evaluation waits until every rate and seed there "
                          "is trained (run `curatune evaluate` again then, or set evaluate.lr_grid_cells: all)"
                          "[/yellow]")
        if evaluator.awaiting_scores:
            console.print(f"learning rates are chosen on suite {evaluator.selection_suite!r}: scoring the grid cells "
                          "on it first, then the selected cells")
        for key, why in plan.skipped.items():
            console.print(f"[yellow]skipping cell {key}: {why}[/yellow]")

    work: list[tuple[Target, list[Suite]]] = []
    done = _Pass(plan, evaluator, [])
    missing_units = 0
    for target in plan.targets:
        pending = evaluator.pending(target)
        done.units.extend((s.name, target) for s in evaluator.suites_for(target))
        if not pending:
            continue
        if not _weights_available(target):
            missing = _missing_weights(target)
            if missing:  # listed in done.json but gone: damage, not keep_weights = none
                done.failed[target.label] = missing
                missing_units += len(pending)
                console.print(f"[red]{target.label}: {missing}[/red]")
            else:
                done.unavailable[target.label] = [s.name for s in pending]
            continue
        work.append((target, pending))
    for label, suites in done.unavailable.items():
        if first is None or label not in first.unavailable:
            console.print(f"[yellow]{label}: no weights on disk (train.keep_weights = none), cannot score "
                          f"{', '.join(suites)}[/yellow]")

    total = sum(len(p) for _, p in work)
    reused = len(done.units) - total - sum(len(v) for v in done.unavailable.values()) - missing_units
    done.not_scored = 0 if score else total
    if not score:
        work, total = [], 0
    if first is None:
        console.print(f"evaluate: {len(plan.targets)} models, {len(evaluator.suites)} suites: {len(done.units)} "
                      f"units; {reused} already scored, {total} to score")
        done.reused = reused
    else:  # what the first pass scored is "already scored" now: keep its counts
        console.print(f"evaluate: {total} more units now that the rates are chosen (the selected cells' full "
                      "evaluation, and any cell that finished training meanwhile)")
        # units on disk now that the first pass did not score were there before: reused
        done.scored, done.reused = first.scored, reused - first.scored
        done.scored_units, done.trained = list(first.scored_units), list(first.trained)
        done.failed = {**first.failed, **done.failed}
    bar = tqdm(total=total, desc="evaluate", unit="unit", disable=not progress)
    count = 0
    threads = _CpuThreads(config.evaluate.cpu_threads)
    try:
        for target, pending in work:
            try:
                model, tokenizer = evaluator.load_model(target)
            except Exception as exc:  # noqa: BLE001 - one unreadable cell must not block the others
                if target.info is None:
                    raise
                done.failed[target.label] = f"{type(exc).__name__}: {exc}; {cell_repair_hint(target.info.path)}"
                console.print(f"[red]{target.label}: cannot load the model, skipped: {exc}[/red]")
                bar.update(len(pending))
                continue
            if target.info is not None:
                done.trained.append(target)
            try:
                for suite in pending:
                    bar.set_postfix_str(f"{target.label} {suite.name}")
                    if evaluator.store.is_done(suite.name, target, evaluator.fingerprint(suite, target)):
                        # another `curatune evaluate` on this run (e.g. one per stage) finished it meanwhile
                        done.reused += 1
                    else:
                        seconds = evaluator.score_unit(suite, target, model, tokenizer)
                        done.scored += 1
                        count += 1
                        done.scored_units.append((target.cell, target.stage, suite.name))
                        if not progress:  # no bar (a log, or --no-progress): one plain line per unit
                            log_line(f"evaluate: {count}/{total} units: {target.label} {suite.name} ({seconds:.1f} s)")
                    evaluator.store.merge(done.units)
                    bar.update(1)
            finally:
                del model, tokenizer
                if target.info is not None:
                    _free_memory()
    finally:
        bar.close()
        threads.restore()
    return done


def _analyze(run_dir: RunDir, config: ExperimentConfig) -> str:
    """Run the analysis step; evaluation results stand even when it cannot run."""
    if not run_dir.scores.exists() or pd.read_parquet(run_dir.scores).empty:
        return "skipped: no scores"
    try:
        analyze_run(run_dir, config.evaluate.analysis)
    except CuratuneError as exc:
        console.print(f"[yellow]analysis skipped: {exc}[/yellow]")
        return f"skipped: {exc}"
    return "written"


class _CpuThreads:
    """Set torch's CPU thread count for the scoring loop (0 = leave it), and put it back."""

    def __init__(self, threads: int):
        import torch

        self.before = torch.get_num_threads()
        if threads:
            torch.set_num_threads(threads)

    def restore(self) -> None:
        import torch

        torch.set_num_threads(self.before)


def _free_memory() -> None:
    gc.collect()
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except ImportError:
        pass


# ----------------------------------------------------------------------------- sweep hook


_HOOK_EVALUATORS: dict[str, Evaluator] = {}


def evaluate_hook(cell: Any, stage: str, model: Any, tokenizer: Any, config: ExperimentConfig, run_dir: RunDir | str) -> None:
    """Score one cell while the sweep still has its model in memory (``train.evaluate_hook``).

    Writes the same part and sample files as ``curatune evaluate``, which then reuses them;
    needed when ``train.keep_weights = none`` deletes full fine-tunes after scoring.
    """
    if stage not in config.evaluate.stages:
        return
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    key = str(run_dir.root.resolve())
    evaluator = _HOOK_EVALUATORS.get(key)
    if evaluator is None or evaluator.config is not config:
        evaluator = _HOOK_EVALUATORS[key] = Evaluator(config, run_dir, progress=False)
    target = Target.of_cell(cell, stage)
    was_training = getattr(model, "training", False)
    model.eval()
    try:
        for suite in evaluator.pending(target):
            evaluator.score_unit(suite, target, model, tokenizer)
    finally:
        if was_training:
            model.train()
