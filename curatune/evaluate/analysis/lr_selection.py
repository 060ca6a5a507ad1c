"""Which learning rate of a grid (``train.learning_rates``) each method keeps, per subset size.

The rule (docs/analysis.md, "Learning-rate selection"), as Biderman et al. (2024) compare LoRA and
full fine-tuning each at its best learning rate:

1. Per (method, size), every rate of the grid is a candidate. Its score is the mean, over seeds,
   of the cells' *criterion* (``evaluate.analysis.lr_select_by``), measured on the validation
   split ``train/validation.parquet``, carved from the training pool, never the held-out split:
   - ``validation_loss`` (the default): done.json's mean per-token loss of the final model on
     the split, recorded by the sweep; lower is better.
   - ``SUITE/METRIC``: a task metric of a generation suite scored on the split (``split:
     validation``, e.g. ``task_validation/chrf``), read from eval/scores.parquet (stage final);
     its direction is the metric's (higher chrF++ is better, lower TER). The loss says how well
     a model predicts the references token by token; the task metric scores what it generates,
     which is what the test measures (on Multi30k the two disagree: docs/study-multi30k).
2. Only rates with the most seeds measured at that (method, size) compete, so a rate is never
   picked because its unlucky seeds are still missing; the others are listed as incomplete.
3. The best mean wins; a tie (equal to 6 decimals) goes to the smaller rate, the more
   conservative one (it moves the base model less).

How sure the choice is: the seeds of a (method, size) train every rate on the same subset, so
each seed is a paired comparison of the winner with the runner-up (the next-best mean).
``runner_up``, ``margin`` (how much better the winner's mean is, in the criterion's units, always
positive) and ``per_seed_margin`` say by how much; ``agreement`` is "every seed" when each seed
alone prefers the winner, "seeds disagree" when some seed prefers the runner-up (the choice is
then within seed noise: cannot tell which rate is better), "one seed" when there is only one
(nothing to check it against), "tie" for a tie. ``provisional`` is true while another rate or seed of that
(method, size) is still training (or, with a suite criterion, not yet scored): the choice may
still change, and so may every comparison made with it. ``at_grid_edge`` is "largest" or "smallest" when
the selected rate is an end of the method's grid and beat another measured rate: the criterion may
improve further beyond it, so the method's best rate is not known (a warning says so). With a task
criterion, ``loss_rule_lr`` is the rate the validation loss would have picked among the same rates.

The selected cells stand for their (method, size) in everything that compares methods or sizes
(learning vs forgetting, significance, the Pareto view, saturation, early vs final, ``curatune
compare``); the others stay listed here with their scores. A run without a grid has no selection
and every cell counts, as before.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from curatune.errors import ConfigError
from curatune.evaluate.metrics import MetricTable
from curatune.rundir import CellInfo, RunDir, format_lr, list_cells, parse_cell_key

#: ``evaluate.analysis.lr_select_by`` value of the default criterion.
VALIDATION_LOSS = "validation_loss"


@dataclass(frozen=True)
class Criterion:
    """What the rule compares: the validation loss, or SUITE/METRIC of a suite on the validation split."""

    by: str = VALIDATION_LOSS
    higher_is_better: bool = False

    @classmethod
    def of(cls, config: Any = None) -> "Criterion":
        """The criterion an ``AnalysisConfig`` names (the validation loss without one)."""
        by = getattr(config, "lr_select_by", None) or VALIDATION_LOSS
        if by == VALIDATION_LOSS:
            return cls()
        metric = by.partition("/")[2]
        table = MetricTable(getattr(config, "metric_directions", None))
        if not table.known(metric):
            raise ConfigError(f"evaluate.analysis.lr_select_by = {by!r}: metric {metric!r} has no known direction; "
                              "set evaluate.analysis.metric_directions")
        return cls(by, table.direction(metric) > 0)

    @property
    def on_suite(self) -> bool:
        return self.by != VALIDATION_LOSS

    @property
    def suite(self) -> str | None:
        return self.by.partition("/")[0] if self.on_suite else None

    @property
    def metric(self) -> str | None:
        return self.by.partition("/")[2] if self.on_suite else None

    @property
    def label(self) -> str:
        return f"{self.metric} on {self.suite}" if self.on_suite else "validation loss"

    def rule(self) -> str:
        what = (f"the highest mean {self.label}" if self.higher_is_better else f"the lowest mean {self.label}")
        where = ("suite " + str(self.suite) + ", generated on train/validation.parquet" if self.on_suite
                 else "train/validation.parquet")
        return (f"per (method, size): the learning rate with {what} over seeds ({where}, carved from the training "
                "pool); only rates with the most measured seeds compete; a tie goes to the smaller rate; "
                "'agreement' says whether every seed alone prefers it to the runner-up")



@dataclass
class LrSelection:
    """The outcome of the rule over a run's grid cells."""

    choices: list[dict[str, Any]] = field(default_factory=list)  # one per (method, size)
    cells: list[dict[str, Any]] = field(default_factory=list)  # every grid cell, selected or not
    warnings: list[str] = field(default_factory=list)
    criterion: Criterion = field(default_factory=Criterion)

    @property
    def active(self) -> bool:
        return bool(self.cells)

    @property
    def selected_cells(self) -> set[str]:
        return {c["cell"] for c in self.cells if c["selected"]}

    @property
    def unselected_cells(self) -> set[str]:
        """Grid cells that do not stand for their (method, size): left out of comparisons."""
        return {c["cell"] for c in self.cells if not c["selected"]}

    @property
    def training(self) -> list[tuple[str, int]]:
        """(method, size) pairs with a cell still pending or training."""
        return sorted({(c["method"], c["size"]) for c in self.cells if c["status"] not in ("done", "failed")})

    @property
    def awaiting_scores(self) -> bool:
        """Whether some done cell is not yet scored on the criterion's suite (`curatune evaluate` can add it)."""
        return any(c.get("awaiting_score") for c in self.cells)

    @property
    def unsettled(self) -> list[tuple[str, int]]:
        """(method, size) pairs whose choice may still change: some cell is pending or training, or (with a
        suite criterion) done but not yet scored on the validation suite."""
        return sorted(set(self.training) | {(c["method"], c["size"]) for c in self.cells if c.get("awaiting_score")})

    def cells_of(self, pairs: list[tuple[str, int]]) -> set[str]:
        """The grid cells of these (method, size) pairs, every rate."""
        wanted = set(pairs)
        return {c["cell"] for c in self.cells if (c["method"], c["size"]) in wanted}

    def compares(self, cell: str) -> bool:
        """Whether ``cell`` stands for its (method, size) in comparisons (see :func:`stands_for`)."""
        return not self.active or stands_for(cell, self.selected_cells)

    def selected_rate(self, method: str, size: int) -> float | None:
        for choice in self.choices:
            if choice["method"] == method and choice["size"] == size:
                return choice["lr"]
        return None

    def to_dict(self) -> dict[str, Any]:
        criterion = {"by": self.criterion.by, "label": self.criterion.label,
                     "higher_is_better": self.criterion.higher_is_better}
        if not self.active:
            return {"rule": self.criterion.rule(), "criterion": criterion, "active": False, "selected": [],
                    "cells": [], "warnings": self.warnings}
        return {"rule": self.criterion.rule(), "criterion": criterion, "active": True, "selected": self.choices,
                "cells": self.cells, "selected_cells": sorted(self.selected_cells),
                "unselected_cells": sorted(self.unselected_cells), "warnings": self.warnings}


def stands_for(cell: str, selected_cells: set[str]) -> bool:
    """In a grid run, whether ``cell`` stands for its (method, size) in comparisons: a cell without
    a rate (the base model, a merge) or a selected grid cell. A grid cell of another rate, listed or
    from an earlier grid whose scores are still on disk, does not."""
    parsed = parse_cell_key(cell)
    return parsed is None or parsed.lr is None or cell in selected_cells


def select_learning_rates(cells: list[CellInfo], criterion: Criterion | None = None,
                          scores: dict[str, float] | None = None) -> LrSelection:
    """Apply the rule to the grid cells (``lr`` set) among ``cells``; other cells are not touched.

    ``scores``: with a suite criterion, each cell's value of it (final stage), by cell key."""
    criterion = criterion or Criterion()
    scores = scores or {}
    grid = [c for c in cells if c.lr is not None]
    selection = LrSelection(criterion=criterion)
    if not grid:
        return selection

    def value(cell: CellInfo) -> float | None:
        if cell.status != "done":
            return None
        found = scores.get(cell.key) if criterion.on_suite else cell.validation_loss
        return float(found) if found is not None and np.isfinite(found) else None

    measured: dict[tuple[str, int], dict[float, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    losses: dict[tuple[str, int], dict[float, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for cell in grid:
        if (score := value(cell)) is not None:
            measured[(cell.method, cell.size)][cell.lr][cell.seed] = score
        if cell.status == "done" and cell.validation_loss is not None and np.isfinite(cell.validation_loss):
            losses[(cell.method, cell.size)][cell.lr][cell.seed] = cell.validation_loss
    rates = defaultdict(set)  # every rate of each method's grid, measured or not
    for cell in grid:
        rates[cell.method].add(cell.lr)
    sign = 1.0 if criterion.higher_is_better else -1.0  # sign * value: larger is better
    chosen: dict[tuple[str, int], float] = {}
    for (method, size), by_rate in sorted(measured.items()):
        candidates = _candidates(by_rate, losses.get((method, size), {}))
        competing = sorted((c for c in candidates if c["complete"]), key=lambda c: (-sign * c["mean_score"], c["lr"]))
        best = competing[0]
        ties = [c["lr"] for c in competing if c["mean_score"] == best["mean_score"]]
        chosen[(method, size)] = best["lr"]
        selection.choices.append({
            "method": method, "size": size, "lr": best["lr"],
            "mean_score": best["mean_score"], "mean_validation_loss": best["mean_validation_loss"],
            "higher_is_better": criterion.higher_is_better, "n_seeds": len(best["seeds"]),
            "tie": len(ties) > 1, "candidates": candidates,
            **_runner_up(by_rate, best, competing[1] if len(competing) > 1 else None, tie=len(ties) > 1, sign=sign),
            # an edge says "the criterion still improves toward it": only once another rate was measured to compare with
            "at_grid_edge": _edge(best["lr"], rates[method]) if len(competing) > 1 else None,
            "grid_rates": sorted(rates[method]),
            **({"loss_rule_lr": _loss_rule(candidates)} if criterion.on_suite else {}),
        })
    for cell in sorted(grid, key=lambda c: (c.method, c.size, c.lr, c.seed)):
        selected = chosen.get((cell.method, cell.size)) == cell.lr
        selection.cells.append({
            "cell": cell.key, "method": cell.method, "size": cell.size, "seed": cell.seed, "lr": cell.lr,
            "status": cell.status, "validation_loss": cell.validation_loss, "score": value(cell),
            "selected": selected,
            # done but not scored on the criterion's suite yet: `curatune evaluate` scores it before choosing
            "awaiting_score": criterion.on_suite and cell.status == "done" and cell.key not in scores,
        })
    unsettled = set(selection.unsettled)
    for choice in selection.choices:  # a rate or seed still training (or unscored) may overturn the choice
        choice["provisional"] = (choice["method"], choice["size"]) in unsettled
    for (method, edge), sizes in _edges(selection.choices).items():
        beyond = "above" if edge == "largest" else "below"
        change = "improve" if criterion.on_suite else "fall"
        selection.warnings.append(
            f"{method}: the selected learning rate is the grid's {edge} at n={', '.join(map(str, sizes))}: "
            f"the {criterion.label} may {change} further {beyond} the grid; add a rate {beyond} "
            f"{format_lr(max(rates[method]) if edge == 'largest' else min(rates[method]))} to train.learning_rates "
            "to find that method's best rate")
    without = sorted({(c.method, c.size) for c in grid} - set(chosen))
    if without:
        selection.warnings.append(
            "no learning rate selected for " + ", ".join(f"{m} n={n}" for m, n in without)
            + f": none of their grid cells finished with a {criterion.label}; their cells are left out of comparisons")
    return selection


def _candidates(by_rate: dict[float, dict[int, float]], losses: dict[float, dict[int, float]]) -> list[dict[str, Any]]:
    """Every measured rate: mean and spread of the criterion over its seeds, and its mean validation loss."""
    most = max(len(seeds) for seeds in by_rate.values())
    out = []
    for lr, seeds in sorted(by_rate.items()):
        values = [seeds[s] for s in sorted(seeds)]
        loss = [losses.get(lr, {}).get(s) for s in sorted(seeds)]
        out.append({
            "lr": lr, "mean_score": round(float(np.mean(values)), 6),
            "sd_score": round(float(np.std(values, ddof=1)), 6) if len(values) > 1 else None,
            "mean_validation_loss": round(float(np.mean(loss)), 6) if loss and None not in loss else None,
            "seeds": sorted(seeds), "complete": len(seeds) == most,
        })
    return out


def _loss_rule(candidates: list[dict[str, Any]]) -> float | None:
    """The rate the validation loss would pick among the same competing rates (None without losses)."""
    competing = [c for c in candidates if c["complete"]]
    if any(c["mean_validation_loss"] is None for c in competing):
        return None
    return min(competing, key=lambda c: (c["mean_validation_loss"], c["lr"]))["lr"]


def _edge(lr: float, rates: set[float]) -> str | None:
    """'largest' or 'smallest' when ``lr`` is at an end of a grid of two or more rates."""
    if len(rates) < 2:
        return None
    return "largest" if lr == max(rates) else "smallest" if lr == min(rates) else None


def _edges(choices: list[dict[str, Any]]) -> dict[tuple[str, str], list[int]]:
    out: dict[tuple[str, str], list[int]] = {}
    for choice in choices:
        if choice["at_grid_edge"] and not choice["tie"]:
            out.setdefault((choice["method"], choice["at_grid_edge"]), []).append(choice["size"])
    return out


def _runner_up(by_rate: dict[float, dict[int, float]], best: dict[str, Any], runner: dict[str, Any] | None,
               tie: bool, sign: float = -1.0) -> dict[str, Any]:
    """How the winner compares with the next-best rate, seed by seed (same subset, so paired).
    Margins are how much better the winner is (``sign`` * difference: positive = winner better)."""
    if runner is None:
        return {"runner_up": None, "margin": None, "per_seed_margin": {}, "agreement": None}
    seeds = sorted(set(by_rate[best["lr"]]) & set(by_rate[runner["lr"]]))
    per_seed = {seed: round(sign * (by_rate[best["lr"]][seed] - by_rate[runner["lr"]][seed]), 6) for seed in seeds}
    if tie:
        agreement = "tie"
    elif len(seeds) < 2:
        agreement = "one seed"
    else:
        agreement = "every seed" if all(m > 0 for m in per_seed.values()) else "seeds disagree"
    return {"runner_up": runner["lr"], "margin": round(sign * (best["mean_score"] - runner["mean_score"]), 6),
            "per_seed_margin": per_seed, "agreement": agreement}


def selected_text(choice: dict[str, Any]) -> str:
    """'5e-5', '5e-5 (tie)', '5e-5 (grid max)' or '5e-5 (provisional)': the selected rate as the report
    and app show it (provisional: another rate or seed of that size is still training or unscored)."""
    edge = {"largest": " (grid max)", "smallest": " (grid min)"}.get(choice.get("at_grid_edge") or "", "")
    return (format_lr(choice["lr"]) + (" (tie)" if choice["tie"] else edge)
            + (" (provisional)" if choice.get("provisional") else ""))


def mean_score(entry: dict[str, Any]) -> float | None:
    """A choice's or candidate's mean criterion (analysis.json files before lr_select_by: the loss)."""
    return entry.get("mean_score", entry.get("mean_validation_loss"))


def criterion_label(selection: dict[str, Any]) -> str:
    """'validation loss' or 'chrf on task_validation': what analysis.json's lr_selection compared."""
    return ((selection or {}).get("criterion") or {}).get("label") or "validation loss"


def by_suite(selection: dict[str, Any]) -> bool:
    """Whether analysis.json's lr_selection chose by a suite's metric rather than the validation loss."""
    return ((selection or {}).get("criterion") or {}).get("by", VALIDATION_LOSS) != VALIDATION_LOSS


def criterion_title(selection: dict[str, Any]) -> str:
    """'lowest mean validation loss' or 'highest mean chrf on task_validation': what wins."""
    best = "highest" if ((selection or {}).get("criterion") or {}).get("higher_is_better") else "lowest"
    return f"{best} mean {criterion_label(selection)}"


def loss_rule_text(choice: dict[str, Any]) -> str:
    """With a suite criterion: 'same', or the other rate the validation loss would pick ('—' without losses)."""
    lr = choice.get("loss_rule_lr")
    if lr is None:
        return "—"
    return "same" if lr == choice["lr"] else format_lr(lr)


def margin_text(choice: dict[str, Any]) -> str:
    """'0.0123 below 5e-4 (every seed: +0.0101, +0.0145)' for a selection's lead over its runner-up
    ('above' when the criterion is better higher)."""
    if choice.get("runner_up") is None:
        incomplete = sum(not c["complete"] for c in choice.get("candidates") or [])
        if incomplete:
            return f"no rival with as many seeds ({incomplete} incomplete)"
        return "no other rate finished" if len(choice.get("grid_rates") or []) > 1 else "only rate"
    seeds = ", ".join(f"{m:+.4f}" for m in choice["per_seed_margin"].values())
    side = "above" if choice.get("higher_is_better") else "below"
    return f"{choice['margin']:.4f} {side} {format_lr(choice['runner_up'])} ({choice['agreement']}: {seeds})"


def criterion_scores(scores: pd.DataFrame | None, criterion: Criterion) -> dict[str, float]:
    """Each cell's final-stage value of a suite criterion, from eval/scores.parquet rows."""
    if scores is None or not criterion.on_suite or scores.empty:
        return {}
    rows = scores[(scores["suite"] == criterion.suite) & (scores["metric"] == criterion.metric)
                  & (scores["stage"] == "final")]
    # NaN kept (scored, no value: e.g. nothing generated): the cell is measured, just not comparable
    return {str(cell): float(v) for cell, v in zip(rows["cell"], rows["value"])}


def run_selection(run_dir: RunDir, config: Any = None, scores: pd.DataFrame | None = None) -> LrSelection:
    """The selection over the cells of train/plan.json (none before the sweep planned), by the criterion
    ``config`` (an AnalysisConfig) names; a suite criterion reads ``scores`` or eval/scores.parquet."""
    criterion = Criterion.of(config)
    if criterion.on_suite and scores is None and run_dir.scores.exists():
        scores = pd.read_parquet(run_dir.scores)
    return select_learning_rates(list_cells(run_dir), criterion, criterion_scores(scores, criterion))


def reported_scores(scores: pd.DataFrame, config: Any = None) -> pd.DataFrame:
    """``scores`` without the rows of the suite that chooses the learning rate (lr_select_by SUITE/...):
    scored on the validation split, it is no task or general suite of any comparison."""
    suite = Criterion.of(config).suite
    if suite is None:
        return scores
    return scores[scores["suite"] != suite].reset_index(drop=True)
