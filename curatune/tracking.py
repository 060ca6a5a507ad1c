"""Experiment trackers (``train.report_to``): the Trainer's own integrations, plus evaluation scores.

The Trainer logs each cell's training (loss, learning rate, grad norm) to every tracker named
in ``train.report_to``. For tensorboard curatune passes the writer itself, so the event files
land in ``RUN_DIR/tensorboard/<cell>/`` (the Trainer's default folder is inside the cell's
checkpoints, which are deleted when the cell finishes), and ``curatune evaluate`` adds each
scored unit to the same folder as ``eval/<suite>/<metric>`` at the step its weights were saved
(the early checkpoint's step and the final step: two points of one curve), the base model under ``tensorboard/base/`` at step 0. wandb and mlflow get the
training logs through the Trainer; evaluation scores are not sent to them (yet).
"""
from __future__ import annotations

import importlib.util
from typing import Any, Iterable

import pandas as pd

from curatune.errors import ConfigError
from curatune.rundir import BASE, RunDir

#: Tracker -> (modules any one of which makes it available, what to install).
TRACKERS = {
    "tensorboard": (("tensorboard", "tensorboardX"), "tensorboard (or the small tensorboardX)"),
    "wandb": (("wandb",), "wandb"),
    "mlflow": (("mlflow",), "mlflow"),
}


def tracker_problems(report_to: Iterable[str]) -> list[str]:
    """A line per tracker named in train.report_to whose package is not installed."""
    problems = []
    for name in report_to:
        modules, install = TRACKERS[name]
        if not any(importlib.util.find_spec(m) is not None for m in modules):
            problems.append(f"train.report_to: {name} is not installed (pip install {install})")
    return problems


def check_trackers(report_to: Iterable[str]) -> None:
    problems = tracker_problems(report_to)
    if problems:
        raise ConfigError("; ".join(problems))


def trainer_report_to(report_to: Iterable[str]) -> list[str] | str:
    """TrainingArguments.report_to: the trackers the Trainer sets up itself (tensorboard is ours)."""
    others = [name for name in report_to if name != "tensorboard"]
    return others or "none"


def summary_writer(log_dir: str):
    """A tensorboard SummaryWriter from torch (needs tensorboard) or tensorboardX."""
    # Imported here: optional packages, needed only when tensorboard tracking is on.
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        from tensorboardX import SummaryWriter
    return SummaryWriter(log_dir=log_dir)


def tensorboard_callback(run_dir: RunDir, key: str):
    """The Trainer's TensorBoardCallback writing to RUN_DIR/tensorboard/<cell>/."""
    from transformers.integrations import TensorBoardCallback

    return TensorBoardCallback(tb_writer=summary_writer(str(run_dir.tensorboard_dir(key))))


def log_eval_scores(run_dir: RunDir, scores: pd.DataFrame, units: list[tuple[str, str, str]],
                    steps: dict[tuple[str, str], int]) -> int:
    """Add the scores of the units just scored ((cell, stage, suite)) to each cell's tensorboard
    folder as eval/<suite>/<metric> at the cell's step; returns the number of scalars written."""
    if scores.empty or not units:
        return 0
    wanted = set(units)
    rows = scores[[(c, st, su) in wanted for c, st, su in zip(scores["cell"], scores["stage"], scores["suite"])]]
    written = 0
    for cell, group in rows.groupby("cell"):
        writer = summary_writer(str(run_dir.tensorboard_dir(str(cell))))
        try:
            for row in group.itertuples():
                step = 0 if cell == BASE else int(steps.get((str(cell), row.stage), 0))
                # early and final share the tag: two points of one curve, at their own steps
                writer.add_scalar(f"eval/{row.suite}/{row.metric}", float(row.value), step)
                written += 1
        finally:
            writer.close()
    return written


def cell_steps(infos: Iterable[Any]) -> dict[tuple[str, str], int]:
    """(cell, stage) -> the optimizer step its weights were saved at, from done.json."""
    steps = {}
    for info in infos:
        done = getattr(info, "done", None) or {}
        if done.get("steps") is not None:
            steps[(info.key, "final")] = int(done["steps"])
        if done.get("early_step") is not None:
            steps[(info.key, "early")] = int(done["early_step"])
    return steps
