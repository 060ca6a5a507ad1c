"""Which learning rate of a grid (``train.learning_rates``) each method keeps, per subset size.

The rule (docs/analysis.md, "Learning-rate selection"), as Biderman et al. (2024) compare LoRA and
full fine-tuning each at its best learning rate:

1. Per (method, size), every rate of the grid is a candidate. Its score is the mean, over
   seeds, of the cells' ``validation_loss`` (done.json: mean per-token loss of the final model
   on ``train/validation.parquet``, carved from the training pool, never the held-out split).
2. Only rates with the most seeds finished at that (method, size) compete, so a rate is never
   picked because its unlucky seeds are still missing; the others are listed as incomplete.
3. The lowest mean wins; a tie (equal to the 6 decimals done.json stores) goes to the smaller
   rate, the more conservative one (it moves the base model less).

How sure the choice is: the seeds of a (method, size) train every rate on the same subset, so
each seed is a paired comparison of the winner with the runner-up (the next-lowest mean).
``runner_up``, ``margin`` (runner-up mean minus winner mean) and ``per_seed_margin`` say by how
much; ``agreement`` is "every seed" when each seed alone prefers the winner, "seeds disagree"
when some seed prefers the runner-up (the choice is then within seed noise: cannot tell which
rate fits better), "one seed" when there is only one (nothing to check it against), "tie" for a tie.
``at_grid_edge`` is "largest" or "smallest" when the selected rate is an end of the method's grid
and beat another finished rate: the loss may fall further beyond it, so the method's best rate is
not known (a warning says so). While no other rate has finished there is no edge to speak of.

The selected cells stand for their (method, size) in everything that compares methods or sizes
(learning vs forgetting, significance, the Pareto view, saturation, early vs final, ``curatune
compare``); the others stay listed here with their validation losses. A run without a grid has no
selection and every cell counts, as before.
"""
from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from curatune.rundir import CellInfo, RunDir, format_lr, list_cells, parse_cell_key

RULE = ("per (method, size): the learning rate with the lowest mean validation loss over seeds (train/"
        "validation.parquet, carved from the training pool); only rates with the most finished seeds compete; "
        "a tie goes to the smaller rate; 'agreement' says whether every seed alone prefers it to the runner-up")


@dataclass
class LrSelection:
    """The outcome of the rule over a run's grid cells."""

    choices: list[dict[str, Any]] = field(default_factory=list)  # one per (method, size)
    cells: list[dict[str, Any]] = field(default_factory=list)  # every grid cell, selected or not
    warnings: list[str] = field(default_factory=list)

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
    def unsettled(self) -> list[tuple[str, int]]:
        """(method, size) pairs whose grid still has cells pending or training: their choice may change."""
        return sorted({(c["method"], c["size"]) for c in self.cells if c["status"] not in ("done", "failed")})

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
        if not self.active:
            return {"rule": RULE, "active": False, "selected": [], "cells": [], "warnings": self.warnings}
        return {"rule": RULE, "active": True, "selected": self.choices, "cells": self.cells,
                "selected_cells": sorted(self.selected_cells), "unselected_cells": sorted(self.unselected_cells),
                "warnings": self.warnings}


def stands_for(cell: str, selected_cells: set[str]) -> bool:
    """In a grid run, whether ``cell`` stands for its (method, size) in comparisons: a cell without
    a rate (the base model, a merge) or a selected grid cell. A grid cell of another rate, listed or
    from an earlier grid whose scores are still on disk, does not."""
    parsed = parse_cell_key(cell)
    return parsed is None or parsed.lr is None or cell in selected_cells


def select_learning_rates(cells: list[CellInfo]) -> LrSelection:
    """Apply the rule to the grid cells (``lr`` set) among ``cells``; other cells are not touched."""
    grid = [c for c in cells if c.lr is not None]
    selection = LrSelection()
    if not grid:
        return selection
    losses: dict[tuple[str, int], dict[float, dict[int, float]]] = defaultdict(lambda: defaultdict(dict))
    for cell in grid:
        loss = cell.validation_loss if cell.status == "done" else None
        if loss is not None and np.isfinite(loss):
            losses[(cell.method, cell.size)][cell.lr][cell.seed] = loss
    rates = defaultdict(set)  # every rate of each method's grid, finished or not
    for cell in grid:
        rates[cell.method].add(cell.lr)
    chosen: dict[tuple[str, int], float] = {}
    for (method, size), by_rate in sorted(losses.items()):
        most = max(len(seeds) for seeds in by_rate.values())
        candidates = []
        for lr, seeds in sorted(by_rate.items()):
            values = [seeds[s] for s in sorted(seeds)]
            candidates.append({
                "lr": lr, "mean_validation_loss": round(float(np.mean(values)), 6),
                "sd_validation_loss": round(float(np.std(values, ddof=1)), 6) if len(values) > 1 else None,
                "seeds": sorted(seeds), "complete": len(seeds) == most,
            })
        competing = sorted((c for c in candidates if c["complete"]), key=lambda c: (c["mean_validation_loss"], c["lr"]))
        best = competing[0]
        ties = [c["lr"] for c in competing if c["mean_validation_loss"] == best["mean_validation_loss"]]
        chosen[(method, size)] = best["lr"]
        selection.choices.append({
            "method": method, "size": size, "lr": best["lr"],
            "mean_validation_loss": best["mean_validation_loss"], "n_seeds": len(best["seeds"]),
            "tie": len(ties) > 1, "candidates": candidates,
            **_runner_up(by_rate, best, competing[1] if len(competing) > 1 else None, tie=len(ties) > 1),
            # an edge says "the loss still falls toward it": only once another rate finished to compare with
            "at_grid_edge": _edge(best["lr"], rates[method]) if len(competing) > 1 else None,
            "grid_rates": sorted(rates[method]),
        })
    for cell in sorted(grid, key=lambda c: (c.method, c.size, c.lr, c.seed)):
        selected = chosen.get((cell.method, cell.size)) == cell.lr
        selection.cells.append({
            "cell": cell.key, "method": cell.method, "size": cell.size, "seed": cell.seed, "lr": cell.lr,
            "status": cell.status, "validation_loss": cell.validation_loss, "selected": selected,
        })
    for (method, edge), sizes in _edges(selection.choices).items():
        beyond = "above" if edge == "largest" else "below"
        selection.warnings.append(
            f"{method}: the selected learning rate is the grid's {edge} at n={', '.join(map(str, sizes))}: "
            f"the validation loss may fall further {beyond} the grid; add a rate {beyond} "
            f"{format_lr(max(rates[method]) if edge == 'largest' else min(rates[method]))} to train.learning_rates "
            "to find that method's best rate")
    without = sorted({(c.method, c.size) for c in grid} - set(chosen))
    if without:
        selection.warnings.append(
            "no learning rate selected for " + ", ".join(f"{m} n={n}" for m, n in without)
            + ": none of their grid cells finished with a validation loss; their cells are left out of comparisons")
    return selection


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
               tie: bool) -> dict[str, Any]:
    """How the winner compares with the next-best rate, seed by seed (same subset, so paired)."""
    if runner is None:
        return {"runner_up": None, "margin": None, "per_seed_margin": {}, "agreement": None}
    seeds = sorted(set(by_rate[best["lr"]]) & set(by_rate[runner["lr"]]))
    per_seed = {seed: round(by_rate[runner["lr"]][seed] - by_rate[best["lr"]][seed], 6) for seed in seeds}
    if tie:
        agreement = "tie"
    elif len(seeds) < 2:
        agreement = "one seed"
    else:
        agreement = "every seed" if all(m > 0 for m in per_seed.values()) else "seeds disagree"
    return {"runner_up": runner["lr"], "margin": round(runner["mean_validation_loss"] - best["mean_validation_loss"], 6),
            "per_seed_margin": per_seed, "agreement": agreement}


def selected_text(choice: dict[str, Any]) -> str:
    """'5e-5', '5e-5 (tie)' or '5e-5 (grid max)': the selected rate as the report and app show it."""
    edge = {"largest": " (grid max)", "smallest": " (grid min)"}.get(choice.get("at_grid_edge") or "", "")
    return format_lr(choice["lr"]) + (" (tie)" if choice["tie"] else edge)


def margin_text(choice: dict[str, Any]) -> str:
    """'0.0123 below 5e-4 (every seed: +0.0101, +0.0145)' for a selection's lead over its runner-up."""
    if choice.get("runner_up") is None:
        incomplete = sum(not c["complete"] for c in choice.get("candidates") or [])
        if incomplete:
            return f"no rival with as many seeds ({incomplete} incomplete)"
        return "no other rate finished" if len(choice.get("grid_rates") or []) > 1 else "only rate"
    seeds = ", ".join(f"{m:+.4f}" for m in choice["per_seed_margin"].values())
    return f"{choice['margin']:.4f} below {format_lr(choice['runner_up'])} ({choice['agreement']}: {seeds})"


def run_selection(run_dir: RunDir) -> LrSelection:
    """The selection over the cells of train/plan.json (none before the sweep planned)."""
    return select_learning_rates(list_cells(run_dir))
