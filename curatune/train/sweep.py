"""Run the sweep grid: plan the data, then train every cell that is not done yet.

    from curatune.train.sweep import run_sweep
    summary = run_sweep(config, run_dir)

Cells run one after another in this process (``executor: local``), as
``accelerate launch`` subprocesses when a cell spans several GPUs (``train.launch``), or
on a Ray cluster (``executor: ray``). Whatever runs a cell, the cell itself decides
skip / resume / restart from its folder (see :mod:`curatune.train.cell`), so the same
command is also the resume command.
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from tqdm.auto import tqdm

from curatune.config import ExperimentConfig, validate_config
from curatune.errors import ConfigError, ModelError
from curatune.models import resolve_model_path
from curatune.runcheck import damaged_done_marker
from curatune.rundir import DONE, FAILED, LOG, CellSpec, RunDir, read_json, read_jsonl
from curatune.runlock import holds_stage_lock
from curatune.terminal import bars_enabled, log_line, quiet_library_warnings
from curatune.tracking import check_trackers
from curatune.train.cell import (
    CellOutcome,
    check_tool_rendering,
    load_pool,
    planned_steps,
    qlora_problem,
    record_failure,
    run_cell,
)
from curatune.train.disk import describe, grid_disk_estimate
from curatune.train.plan import plan_sweep, stale_cells

# ----------------------------------------------------------------------------- progress


class SweepProgress:
    """One overall bar (optimizer steps of all cells to run, with cells done/total and ETA)
    and one bar for the steps of the cell in progress."""

    def __init__(self, enabled: bool, total_cells: int, estimated_steps: dict[str, int]):
        # Live bars on a terminal only; otherwise (a log, or --no-progress) one plain line per cell:
        # a sweep of hours must say what it has done wherever its output goes.
        self.enabled = bars_enabled(enabled)
        self.plain = not self.enabled
        self.total_cells = total_cells
        self.finished = 0
        self.estimates = dict(estimated_steps)
        self.overall = None
        self.cell_bar = None
        self._seen: dict[str, int] = {}
        if self.enabled:
            self._tqdm = tqdm
            self.overall = tqdm(total=sum(self.estimates.values()), unit="step", position=0,
                                desc=self._desc(), dynamic_ncols=True)

    def _desc(self) -> str:
        return f"sweep: {self.finished}/{self.total_cells} cells"

    def cell_started(self, key: str, total_steps: int) -> None:
        if not self.enabled:
            return
        estimate = self.estimates.get(key, 0)
        if total_steps != estimate:  # the real count is known once the data is tokenized
            self.overall.total += total_steps - estimate
            self.estimates[key] = total_steps
            self.overall.refresh()
        if self.cell_bar is not None:
            self.cell_bar.close()
        self.cell_bar = self._tqdm(total=total_steps, unit="step", position=1, leave=False,
                                   desc=key, dynamic_ncols=True)

    def cell_step(self, key: str, step: int, info: dict | None = None) -> None:
        if not self.enabled:
            return
        delta = step - self._seen.get(key, 0)
        self._seen[key] = step
        if delta > 0:
            self.overall.update(delta)
            if self.cell_bar is not None and self.cell_bar.desc.startswith(key):
                self.cell_bar.update(delta)
        if info and self.cell_bar is not None and "loss" in info:
            self.cell_bar.set_postfix(loss=f"{info['loss']:.4f}", refresh=False)

    def cell_finished(self, key: str, outcome: CellOutcome) -> None:
        self.finished += 1
        if self.plain:
            what = outcome.status if outcome.status != "failed" else f"failed: {outcome.error}"
            log_line(f"{self._desc()}: {key} {what} ({outcome.wall_seconds:.1f} s)")
        if not self.enabled:
            return
        # A failed or resumed cell never walks all its steps here: settle the overall bar.
        left = self.estimates.get(key, 0) - self._seen.get(key, 0)
        if left > 0:
            self.overall.update(left)
            self._seen[key] = self.estimates.get(key, 0)
        if self.cell_bar is not None:
            self.cell_bar.close()
            self.cell_bar = None
        self.overall.set_description(self._desc())
        if outcome.status == "failed":
            self.overall.write(f"cell {key} failed: {outcome.error}")

    def close(self) -> None:
        if self.cell_bar is not None:
            self.cell_bar.close()
        if self.overall is not None:
            self.overall.close()


# ----------------------------------------------------------------------------- executors


def uses_launcher(config: ExperimentConfig) -> bool:
    launch = config.train.launch
    return launch.num_processes > 1 or bool(launch.accelerate_config)


def launch_command(config: ExperimentConfig, run_dir: RunDir, spec: CellSpec) -> list[str]:
    """``accelerate launch`` of one cell (DDP / FSDP / DeepSpeed come from the accelerate config)."""
    launch = config.train.launch
    cmd = [sys.executable, "-m", "accelerate.commands.launch"]
    if launch.accelerate_config:
        path = Path(launch.accelerate_config).expanduser()
        if not path.exists():
            raise ConfigError(f"train.launch.accelerate_config: {path} not found")
        cmd += ["--config_file", str(path)]
    cmd += ["--num_processes", str(launch.num_processes)]
    cmd += ["-m", "curatune.train.cell_main", "--run-dir", str(run_dir.root),
            "--method", spec.method, "--size", str(spec.size), "--seed", str(spec.seed)]
    if spec.lr is not None:
        cmd += ["--lr", repr(spec.lr)]
    return cmd


def run_cell_launched(config: ExperimentConfig, run_dir: RunDir, spec: CellSpec,
                      on_step: Callable[[int, dict], None] | None = None) -> CellOutcome:
    """Run a cell as an accelerate-launched subprocess, following its log for progress."""
    cell_dir = spec.path(run_dir)
    started = time.perf_counter()
    proc = subprocess.Popen(launch_command(config, run_dir, spec))
    while proc.poll() is None:
        time.sleep(1.0)
        if on_step is not None:
            log = read_jsonl(cell_dir / LOG)
            if log:
                on_step(int(log[-1]["step"]), {"loss": log[-1].get("loss")})
    return outcome_from_dir(run_dir, spec, time.perf_counter() - started,
                            fallback_error=f"accelerate launch exited with status {proc.returncode}")


def outcome_from_dir(run_dir: RunDir, spec: CellSpec, wall: float, fallback_error: str) -> CellOutcome:
    cell_dir = spec.path(run_dir)
    if (cell_dir / DONE).exists():
        return CellOutcome(spec.key, "done", wall, done=read_json(cell_dir / DONE))
    if (cell_dir / FAILED).exists():
        return CellOutcome(spec.key, "failed", wall, error=read_json(cell_dir / FAILED).get("error"))
    record_failure(run_dir, spec, fallback_error, "")
    return CellOutcome(spec.key, "failed", wall, error=fallback_error)


def execute_cell(config: ExperimentConfig, run_dir: RunDir, spec: CellSpec, *, hook=None, pool=None,
                 on_step=None, on_start=None) -> CellOutcome:
    """Run one cell here or through accelerate; failures end in failed.json, not exceptions."""
    if uses_launcher(config):
        return run_cell_launched(config, run_dir, spec, on_step)
    return run_cell(config, run_dir, spec, hook=hook, pool=pool, on_step=on_step, on_start=on_start)


class LocalExecutor:
    """Cells one after another, in this process (or one accelerate launch at a time)."""

    def run(self, config: ExperimentConfig, run_dir: RunDir, specs: list[CellSpec], progress: SweepProgress,
            hook=None) -> list[CellOutcome]:
        pool = load_pool(run_dir)
        outcomes = []
        for spec in specs:
            outcome = execute_cell(
                config, run_dir, spec, hook=hook, pool=pool,
                on_step=lambda step, info, key=spec.key: progress.cell_step(key, step, info),
                on_start=lambda total, key=spec.key: progress.cell_started(key, total),
            )
            progress.cell_finished(spec.key, outcome)
            outcomes.append(outcome)
        return outcomes


def _ray_cell(config_dict: dict, run_root: str, spec: tuple, hook) -> dict:
    """Body of the Ray task: validate the config and run the cell on the worker."""

    config = validate_config(config_dict, "sweep config")
    outcome = execute_cell(config, RunDir(run_root), CellSpec(*spec), hook=hook)
    return asdict(outcome)


class RayExecutor:
    """Cells as Ray tasks, one per GPU (when the cluster has GPUs) or CPU slot.

    The run directory must be on storage every Ray node sees (a shared filesystem);
    each task writes its own cell folder, the driver only follows logs and results.
    """

    def run(self, config: ExperimentConfig, run_dir: RunDir, specs: list[CellSpec], progress: SweepProgress,
            hook=None) -> list[CellOutcome]:
        try:
            import ray
        except ImportError:
            raise ConfigError("train.executor = ray needs Ray: pip install 'curatune[ray]'") from None
        settings = config.train.ray
        if not ray.is_initialized():
            if settings.address:
                ray.init(address=settings.address, log_to_driver=False)
            else:
                ray.init(include_dashboard=False, log_to_driver=False)
        gpus = settings.gpus_per_cell
        if gpus is None:
            gpus = float(config.train.launch.num_processes) if ray.cluster_resources().get("GPU", 0) > 0 else 0.0
        task = ray.remote(num_cpus=settings.cpus_per_cell, num_gpus=gpus, max_retries=0)(_ray_cell)
        run_root = str(run_dir.root.resolve())
        config_dict = config.resolved()
        pending = {
            task.remote(config_dict, run_root, (s.method, s.size, s.seed, s.lr), hook): s for s in specs
        }
        outcomes = []
        started = {s.key: time.perf_counter() for s in specs}
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1, timeout=1.0)
            for ref in ready:
                spec = pending.pop(ref)
                try:
                    outcome = CellOutcome(**ray.get(ref))
                except Exception as exc:  # noqa: BLE001 - worker died (OOM kill, node lost)
                    error = f"{type(exc).__name__}: {exc}".splitlines()[0]
                    outcome = outcome_from_dir(run_dir, spec, time.perf_counter() - started[spec.key], error)
                progress.cell_finished(spec.key, outcome)
                outcomes.append(outcome)
            for spec in pending.values():  # follow running cells through their logs
                log = read_jsonl(spec.path(run_dir) / LOG)
                if log:
                    progress.cell_step(spec.key, int(log[-1]["step"]), {})
        return outcomes


EXECUTORS = {"local": LocalExecutor, "ray": RayExecutor}


# ----------------------------------------------------------------------------- the sweep


@dataclass
class SweepSummary:
    cells_total: int
    ran: list[str] = field(default_factory=list)
    already_done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    oversized: list[int] = field(default_factory=list)
    pool_size: int = 0
    heldout_size: int = 0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "cells_total": self.cells_total,
            "cells_done": len(self.ran) + len(self.already_done),
            "ran": self.ran,
            "already_done": self.already_done,
            "failed": self.failed,
            "oversized": self.oversized,
            "pool_size": self.pool_size,
            "heldout_size": self.heldout_size,
            "wall_seconds": round(self.wall_seconds, 2),
            "notes": self.notes,
        }


@holds_stage_lock("train")  # one process per stage on a run directory
def run_sweep(config: ExperimentConfig, run_dir: RunDir | str | os.PathLike | None = None, *, only: list[str] | None = None,
              executor: str | None = None, hook: Callable | None = None, progress: bool = True) -> dict:
    """Plan and train every cell not done yet; returns a summary dict.

    ``only`` restricts this invocation to some methods (the plan still lists the whole
    grid). ``hook(cell, stage, model, tokenizer, config, run_dir)`` is called with each
    freshly trained cell's early and final model (overrides train.evaluate_hook).
    """
    started = time.perf_counter()
    if not isinstance(run_dir, RunDir):
        run_dir = RunDir(run_dir if run_dir is not None else config.run_dir)
    executor = executor or config.train.executor
    if executor not in EXECUTORS:
        raise ConfigError(f"executor {executor!r}: expected one of {sorted(EXECUTORS)}")
    if only:
        unknown = [m for m in only if m not in config.train.methods]
        if unknown:
            raise ConfigError(f"--only {unknown}: not in train.methods {config.train.methods}")
    if config.train.keep_weights == "none" and hook is None and not config.train.evaluate_hook \
            and "full" in (only or config.train.methods):
        raise ConfigError(
            "train.keep_weights = none deletes full fine-tune weights, so they must be evaluated during "
            "the sweep: set train.evaluate_hook, or use train.keep_weights = final"
        )
    if hook is not None and uses_launcher(config):
        raise ConfigError("a hook function cannot cross an accelerate launch; set train.evaluate_hook instead")
    check_trackers(config.train.report_to)
    methods = only or config.train.methods
    if "qlora" in methods and executor == "local":
        problem = qlora_problem()
        if problem:
            raise ModelError(problem + " (or run the other methods with --only)")

    run_dir.write_manifest(config.resolved(), "train")
    plan = plan_sweep(config, run_dir)
    stale = stale_cells(config, run_dir, plan)
    if stale:
        raise ConfigError(
            "finished cells were trained with other settings or data than the current config, and finished "
            "results are never overwritten; use a new run_dir, or restore the settings:\n  " + "\n  ".join(stale)
        )
    grid = [s for s in plan.specs if s.method in methods]
    done = [s for s in grid if (s.path(run_dir) / DONE).exists() and damaged_done_marker(s.path(run_dir)) is None]
    for spec in grid:  # a done.json that does not parse never counts: the cell is trained again
        damage = damaged_done_marker(spec.path(run_dir))
        if damage:
            plan.notes.append(f"{damage}; training cell {spec.key} again")
    todo = [s for s in grid if s not in done]
    if todo and executor == "local":  # a missing model is one error (exit 2), not a failure of every cell
        base_path = resolve_model_path(config.model.base, trust_remote_code=config.model.trust_remote_code)
        check_tool_rendering(config, run_dir, base_path)  # a template that drops tool calls: one error, not N failed cells
        disk, _ = grid_disk_estimate(config, dict(Counter(s.method for s in todo)), base_path, run_dir.root)
        if disk is not None and not disk.fits:  # warn now rather than hours in; a full disk still stops cleanly
            plan.notes.append(f"not enough free space for every cell's weights: {describe(disk, run_dir.root)}")
    summary = SweepSummary(len(grid), already_done=[s.key for s in done], oversized=plan.oversized,
                           pool_size=plan.pool_size, heldout_size=plan.heldout_size, notes=plan.notes)

    bars = SweepProgress(progress, len(grid), {s.key: planned_steps(config, s.size) for s in todo})
    bars.finished = len(done)
    if bars.enabled:
        for note in plan.notes:
            bars.overall.write(f"note: {note}")
        bars.overall.set_description(bars._desc())
    elif bars.plain:
        for note in plan.notes:
            log_line(f"note: {note}")
        log_line(f"{bars._desc()}: {len(todo)} to train")
    try:
        with quiet_library_warnings():
            outcomes = EXECUTORS[executor]().run(config, run_dir, todo, bars, hook=hook)
    finally:
        bars.close()
    for outcome in outcomes:
        if outcome.status == "failed":
            summary.failed[outcome.key] = outcome.error or "unknown error"
        elif outcome.status == "done":
            summary.ran.append(outcome.key)
        else:
            summary.already_done.append(outcome.key)
    summary.wall_seconds = time.perf_counter() - started
    result = summary.as_dict()
    run_dir.stamp_stage_finished(
        "train", cells_total=result["cells_total"], cells_done=result["cells_done"],
        cells_failed=len(summary.failed), oversized=plan.oversized, wall_seconds=result["wall_seconds"],
    )
    return result
