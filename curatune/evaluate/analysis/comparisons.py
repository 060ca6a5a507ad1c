"""Paired comparisons read from a run: which test fits which metric, the items of two systems
lined up by example id, and the labels of every (cell, stage, suite) against the base model.

The tests themselves are :mod:`curatune.evaluate.analysis.significance`. Which one applies:

* a sacrebleu corpus metric (bleu, chrf = chrF++, ter): sacrebleu's paired bootstrap on the
  sufficient statistics recomputed from the ``output`` and ``reference`` columns of the
  sample files; the recomputed score must equal the one in scores.parquet, else the samples
  are not what was scored and the answer is "cannot tell";
* a metric whose per-item values are all 0 or 1 (acc, acc_norm, exact_match, ...): McNemar's
  exact test;
* perplexity-like metrics (bits_per_byte, word/byte/token_perplexity, LAMBADA perplexity):
  paired bootstrap of the ratio from the per-item log-likelihoods and lengths;
* macro_f1 (classification): paired bootstrap of macro-F1 from per-item TP/FP/FN indicators per
  class, recomputed from the ``output`` (predicted label) and ``reference`` columns;
* the retention probes' kl_divergence and base_answer_logprob: paired bootstrap of the mean over
  answer tokens (each item weighted by its ``n_answer_tokens``, as the suite score is);
* any other per-item metric (field_f1, comet_like): paired bootstrap of the mean over items.

Two systems are compared only on the same items: the example ids with a value must be the
same set in both, else the answer is "cannot tell" (with the reason).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pandas as pd

from curatune.evaluate.analysis.config import SignificanceConfig
from curatune.evaluate.analysis.inputs import ScoreIndex, SuiteRoles
from curatune.evaluate.analysis.significance import (
    BINARY_METRICS,
    CANNOT_TELL,
    NOT_TESTED,
    SACREBLEU_METRICS,
    PairedResult,
    adjust_p_values,
    corpus_statistic,
    corpus_statistics,
    is_binary,
    macro_f1_statistics,
    mcnemar_exact,
    paired_bootstrap,
    verdict,
)
from curatune.evaluate.metrics import DEFINITIONAL_BASE, MetricTable
from curatune.rundir import RunDir

# Perplexity-like metrics as functions of per-item sums: (columns of the samples file, score).
_LN2 = math.log(2)
_RATIOS: dict[str, tuple[tuple[str, str], Callable[[float, float], float]]] = {
    "bits_per_byte": (("loglik", "n_bytes"), lambda ll, n: -ll / n / _LN2),
    "byte_perplexity": (("loglik", "n_bytes"), lambda ll, n: math.exp(min(-ll / n, 700))),
    "word_perplexity": (("loglik", "n_words"), lambda ll, n: math.exp(min(-ll / n, 700))),
    "token_perplexity": (("loglik", "n_tokens"), lambda ll, n: math.exp(min(-ll / n, 700))),
}

#: Per-item means whose suite score weights each item by its token count (the retention probes);
#: sample files from before the count was written fall back to the plain mean over items.
TOKEN_WEIGHTED = {"kl_divergence": "n_answer_tokens", "base_answer_logprob": "n_answer_tokens"}


@dataclass
class ItemStats:
    """One system's per-item statistics for one metric: rows are items (``ids``); the score is
    ``statistic`` of the column sums. ``kind`` says which test applies."""

    ids: list[str]
    stats: np.ndarray  # (n_items, k)
    statistic: Callable[[np.ndarray], float]
    kind: str  # corpus | binary | ratio | mean
    n_systems: int = 1  # seeds pooled into these stats

    @property
    def value(self) -> float:
        return float(self.statistic(self.stats.sum(0)))

    def aligned(self, ids: list[str]) -> np.ndarray:
        position = {item: i for i, item in enumerate(self.ids)}
        return self.stats[[position[i] for i in ids]]


class Unavailable(Exception):
    """A comparison that cannot be made; the message says why (shown to the user)."""


class SampleItems:
    """Per-item statistics of (suite, cell, stage, metric) from eval/samples, cached."""

    def __init__(self, run_dir: RunDir):
        self.run_dir = run_dir
        self._frames: dict[tuple[str, str, str], pd.DataFrame | None] = {}
        self._stats: dict[tuple[str, str, str, str], ItemStats] = {}

    def frame(self, suite: str, cell: str, stage: str) -> pd.DataFrame | None:
        key = (suite, cell, stage)
        if key not in self._frames:
            path = self.run_dir.sample_file(suite, cell, stage)
            frame = None
            if path.exists():
                try:
                    frame = pd.read_parquet(path)
                except Exception:  # a damaged file is reported as missing samples
                    frame = None
            if frame is not None and "example_id" in frame.columns:
                frame = frame.assign(example_id=frame["example_id"].astype(str))
                frame = frame[~frame["example_id"].duplicated()]
            else:
                frame = None
            self._frames[key] = frame
        return self._frames[key]

    def stats(self, suite: str, cell: str, stage: str, metric: str) -> ItemStats:
        key = (suite, cell, stage, metric)
        if key not in self._stats:
            self._stats[key] = self._build(suite, cell, stage, metric)
        return self._stats[key]

    def column_stats(self, suite: str, cell: str, stage: str, metric: str) -> ItemStats:
        """The per-item column of ``metric`` as a mean, even for corpus and ratio metrics (whose
        per-item column is a sentence-level proxy, e.g. sentence chrF++)."""
        return self._build(suite, cell, stage, metric, column_only=True)

    def _build(self, suite: str, cell: str, stage: str, metric: str, column_only: bool = False) -> ItemStats:
        frame = self.frame(suite, cell, stage)
        where = f"eval/samples/{suite}/{cell}__{stage}.parquet"
        if frame is None:
            raise Unavailable(f"{where} is missing or unreadable: no per-item values")
        columns = set(frame.columns)
        if not column_only and metric in SACREBLEU_METRICS and {"output", "reference"} <= columns:
            kept = frame.dropna(subset=["output", "reference"])
            stats = corpus_statistics(metric, kept["output"].astype(str).tolist(), kept["reference"].astype(str).tolist())
            # The reference text goes with the statistics: two systems must share it per item.
            return ItemStats(kept["example_id"].tolist(), stats, corpus_statistic(metric), "corpus")
        if not column_only and metric == "macro_f1" and {"output", "reference"} <= columns:
            # Macro-F1 is a function of per-class TP/FP/FN counts, i.e. of per-item sums.
            kept = frame.dropna(subset=["output", "reference"])
            stats, statistic = macro_f1_statistics(kept["reference"].astype(str), kept["output"].astype(str))
            return ItemStats(kept["example_id"].tolist(), stats, statistic, "ratio")
        if not column_only and metric in _RATIOS and set(_RATIOS[metric][0]) <= columns:
            (num, den), score = _RATIOS[metric]
            kept = frame.dropna(subset=[num, den])
            stats = kept[[num, den]].to_numpy(dtype=float)
            return ItemStats(kept["example_id"].tolist(), stats, lambda s, f=score: f(s[0], s[1]), "ratio")
        if not column_only and metric in TOKEN_WEIGHTED and {metric, TOKEN_WEIGHTED[metric]} <= columns:
            # Retention probes: the score is a mean over answer tokens, the rows per-prompt means.
            kept = frame.dropna(subset=[metric, TOKEN_WEIGHTED[metric]])
            weights = kept[TOKEN_WEIGHTED[metric]].to_numpy(dtype=float)
            stats = np.column_stack([kept[metric].to_numpy(dtype=float) * weights, weights])
            return ItemStats(kept["example_id"].tolist(), stats, lambda s: float(s[0] / s[1]), "ratio")
        if not column_only and metric == "perplexity" and {"loglik", metric} <= columns:
            # LAMBADA: exp(-mean per-item log-likelihood of the target word).
            kept = frame.dropna(subset=["loglik"])
            stats = np.column_stack([kept["loglik"].to_numpy(dtype=float), np.ones(len(kept))])
            return ItemStats(kept["example_id"].tolist(), stats,
                             lambda s: math.exp(min(-s[0] / s[1], 700)), "ratio")
        if metric not in frame.columns:
            raise Unavailable(f"{where} has no per-item column {metric!r}")
        values = pd.to_numeric(frame[metric], errors="coerce")
        kept = frame.loc[values.notna(), "example_id"].tolist()
        values = values.dropna().to_numpy(dtype=float)
        if not len(values):
            raise Unavailable(f"{where}: column {metric!r} has no values")
        stats = np.column_stack([values, np.ones(len(values))])
        # McNemar only for correct/incorrect metrics: a sentence chrF that happens to be 0 everywhere is not one.
        kind = "binary" if metric in BINARY_METRICS and is_binary(values) else "mean"
        return ItemStats(kept, stats, lambda s: float(s[0] / s[1]), kind)

    def references(self, suite: str, cell: str, stage: str) -> pd.Series | None:
        frame = self.frame(suite, cell, stage)
        if frame is None or "reference" not in frame.columns:
            return None
        return frame.set_index("example_id")["reference"].astype(str)


def pooled(systems: list[ItemStats]) -> ItemStats:
    """Several seeds of one cell as one system: per-item statistics summed over seeds (the
    corpus of all their outputs), items resampled together. Seeds must share their items."""
    first = systems[0]
    if len(systems) == 1:
        return first
    ids = sorted(first.ids)
    for other in systems[1:]:
        if set(other.ids) != set(ids):
            raise Unavailable("the seeds of a cell were scored on different items")
    total = sum(s.aligned(ids) for s in systems)
    kind = "mean" if first.kind == "binary" else first.kind  # a per-item share of seeds is no longer 0/1
    return ItemStats(ids, total, first.statistic, kind, n_systems=len(systems))


def compare_stats(a: ItemStats, b: ItemStats, settings: SignificanceConfig) -> PairedResult:
    """The paired test of b against a on their shared items (they must be the same set)."""
    if set(a.ids) != set(b.ids):
        shared = len(set(a.ids) & set(b.ids))
        raise Unavailable(f"different items ({len(a.ids)} and {len(b.ids)} items, {shared} shared): "
                          "a paired test needs the same items")
    if (a.kind in ("corpus", "ratio") or b.kind in ("corpus", "ratio")) and a.kind != b.kind:
        raise Unavailable(f"the two sample files hold different per-item statistics ({a.kind} and {b.kind}), "
                          "e.g. one written before retention samples carried n_answer_tokens (curatune "
                          "before 2026-11-30): the two scores are not the same kind of mean")
    ids = sorted(a.ids)
    stats_a, stats_b = a.aligned(ids), b.aligned(ids)
    if a.kind == "binary" and b.kind == "binary":
        return mcnemar_exact(stats_a[:, 0], stats_b[:, 0], settings.ci_level)
    common = dict(n_resamples=settings.n_resamples, seed=settings.seed, ci_level=settings.ci_level)
    if a.kind == "corpus":
        return paired_bootstrap(stats_a, stats_b, a.statistic, p_value="sacrebleu", float32_sums=True,
                                test="sacrebleu_paired_bs", **common)
    return paired_bootstrap(stats_a, stats_b, a.statistic, p_value="shift", **common)


def _check_references(items: SampleItems, suite: str, a: tuple[str, str], b: tuple[str, str]) -> None:
    ref_a, ref_b = items.references(suite, *a), items.references(suite, *b)
    if ref_a is None or ref_b is None:
        return
    shared = ref_a.index.intersection(ref_b.index)
    differ = int((ref_a[shared] != ref_b[shared]).sum())
    if differ:
        raise Unavailable(f"{differ} items have different reference texts in the two sample files")


def _check_value(stats: ItemStats, stored: float | None, metric: str, who: str) -> None:
    """The samples must reproduce the stored score, else they are not what was scored."""
    if stored is None or stats.kind not in ("corpus", "ratio"):
        return
    value = stats.value
    if not math.isclose(value, stored, rel_tol=1e-4, abs_tol=1e-6):
        raise Unavailable(f"the sample texts of {who} give {metric} = {value:.4g}, scores.parquet has "
                          f"{stored:.4g}: the samples are not what was scored")


def compare_systems(
    items: SampleItems,
    suite: str,
    metric: str,
    a: list[tuple[str, str]],
    b: list[tuple[str, str]],
    settings: SignificanceConfig,
    stored: Callable[[str, str], float | None] | None = None,
) -> dict[str, Any]:
    """Compare system b against system a on one suite's metric; each system is one or more
    (cell, stage) pairs (seeds, pooled). Returns the result as a dict with ``status``
    "tested", or "cannot tell" with a ``reason``."""
    try:
        systems = []
        for members in (a, b):
            parts = []
            for cell, stage in members:
                stats = items.stats(suite, cell, stage, metric)
                if stored is not None:
                    _check_value(stats, stored(cell, stage), metric, f"{cell} ({stage})")
                parts.append(stats)
            systems.append(pooled(parts))
        if systems[0].kind == "corpus":
            for x in a:
                for y in b:
                    _check_references(items, suite, x, y)
        result = compare_stats(systems[0], systems[1], settings)
    except Unavailable as exc:
        return {"status": CANNOT_TELL, "metric": metric, "reason": str(exc)}
    return {"status": "tested", "metric": metric, **result.to_dict()}


# ----------------------------------------------------------------------------- vs the base model


def comparison_entry(result: dict[str, Any], direction: int) -> dict[str, Any]:
    """A compare_systems result as a row: values of both systems (base_value = a, value = b),
    difference, interval, p-value, and the label once :func:`label_family` has adjusted p."""
    entry = {k: result.get(k) for k in ("metric", "test", "n_items", "value_a", "value_b", "difference",
                                         "ci_low", "ci_high", "ci_level", "p_value")}
    entry["base_value"], entry["value"] = entry.pop("value_a"), entry.pop("value_b")
    entry["p_adjusted"] = None
    entry["direction"] = "higher" if direction > 0 else "lower"
    entry["reason"] = result.get("reason")
    entry["label"] = result["status"] if result["status"] != "tested" else None
    if result["status"] == "tested" and result.get("detail", {}).get("right_in_a_only") is not None:
        entry["discordant"] = {"worse": result["detail"]["right_in_a_only"], "better": result["detail"]["right_in_b_only"]}
    return entry


def label_family(entries: list[dict[str, Any]], settings: SignificanceConfig) -> None:
    """Adjust the p-values of every tested entry together and label each (in place)."""
    tested = [e for e in entries if e["label"] is None]
    adjusted = adjust_p_values([e["p_value"] for e in tested], settings.fdr, settings.alpha)
    for entry, p in zip(tested, adjusted):
        entry["p_adjusted"] = p
        entry["label"] = verdict(entry["difference"], 1 if entry["direction"] == "higher" else -1, p, settings.alpha)


def significance_vs_base(
    run_dir: RunDir,
    rows: list[dict[str, Any]],
    index: ScoreIndex,
    roles: SuiteRoles,
    table: MetricTable,
    settings: SignificanceConfig,
    items: SampleItems | None = None,
) -> dict[str, Any]:
    """Add ``significance[suite]`` to every learning_forgetting row (in place): the paired test
    of the cell's headline metric against the base model's on the same items, the interval,
    the p-value adjusted over the whole run, and the label. Returns a summary for analysis.json."""
    items = items or SampleItems(run_dir)
    base = index.base_cell()
    entries = []
    for row in rows:
        row["significance"] = {}
        for suite in roles.task + roles.general:
            metric = roles.primary[suite]
            if index.get(row["cell"], row["stage"], suite, metric) is None:
                continue
            direction = table.direction(metric)
            if metric in DEFINITIONAL_BASE:
                entry = comparison_entry({"status": NOT_TESTED, "metric": metric, "reason": (
                    f"{metric} of the base model is {DEFINITIONAL_BASE[metric]:g} by definition, so any change "
                    "at all differs from it; compare cells with `curatune compare` instead")}, direction)
            else:
                result = compare_systems(
                    items, suite, metric, [(base, "base")], [(row["cell"], row["stage"])], settings,
                    stored=lambda cell, stage, s=suite, m=metric: index.get(cell, stage, s, m),
                )
                entry = comparison_entry(result, direction)
            row["significance"][suite] = entry
            entries.append(entry)
    label_family(entries, settings)
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry["label"]] = counts.get(entry["label"], 0) + 1
    return {
        "alpha": settings.alpha,
        "fdr": settings.fdr,
        "family_size": sum(1 for e in entries if e["p_adjusted"] is not None),
        "labels": counts,
        "n_resamples": settings.n_resamples,
        "seed": settings.seed,
    }


# ----------------------------------------------------------------------------- two cells


def paired_entry(
    items: SampleItems,
    suite: str,
    metric: str,
    a: list[tuple[str, str]],
    b: list[tuple[str, str]],
    settings: SignificanceConfig,
    table: MetricTable,
    stored: Callable[[str, str], float | None] | None = None,
) -> dict[str, Any]:
    """System b against system a (each one or more (cell, stage), seeds pooled) as a row with
    ``value_a`` and ``value_b``; labelled once :func:`label_family` has adjusted its family."""
    entry = comparison_entry(compare_systems(items, suite, metric, a, b, settings, stored=stored),
                             table.direction(metric))
    entry["value_a"], entry["value_b"] = entry.pop("base_value"), entry.pop("value")
    return entry


def compare_cells(
    run_dir: RunDir,
    index: ScoreIndex,
    roles: SuiteRoles,
    table: MetricTable,
    cell_a: str,
    cell_b: str,
    settings: SignificanceConfig,
    stage: str = "final",
    items: SampleItems | None = None,
) -> list[dict[str, Any]]:
    """Cell b against cell a on every suite's headline metric (same items), p-values adjusted
    over the suites; one dict per suite with the same keys as the vs-base entries."""
    items = items or SampleItems(run_dir)
    entries = []
    for suite in roles.task + roles.general:
        metric = roles.primary[suite]
        stage_a = "base" if cell_a == index.base_cell() else stage
        stage_b = "base" if cell_b == index.base_cell() else stage
        if index.get(cell_a, stage_a, suite, metric) is None or index.get(cell_b, stage_b, suite, metric) is None:
            continue
        entry = paired_entry(items, suite, metric, [(cell_a, stage_a)], [(cell_b, stage_b)], settings, table,
                             stored=lambda cell, st, s=suite, m=metric: index.get(cell, st, s, m))
        entry["suite"] = suite
        entry["role"] = "task" if suite in roles.task else "general"
        entries.append(entry)
    label_family(entries, settings)
    return entries


# ----------------------------------------------------------------------------- Pareto frontier


def mark_frontier_ordering(
    points: list[dict[str, Any]],
    rows: list[dict[str, Any]],
    index: ScoreIndex,
    roles: SuiteRoles,
    table: MetricTable,
    settings: SignificanceConfig,
    items: SampleItems,
) -> None:
    """For each frontier point, test its task gain against the next frontier point below it
    (the neighbour it is ranked above) on the first task suite's headline metric, seeds pooled
    (in place: ``vs_neighbour`` and ``ordering_significant``; None when it cannot be told)."""
    suite = roles.task[0]
    metric = roles.primary[suite]
    base = index.base_cell()
    members: dict[tuple[str, int], list[tuple[str, str]]] = {}
    for row in rows:
        if row["stage"] == "final":
            members.setdefault((row["method"], int(row["size"])), []).append((row["cell"], "final"))
    front = [p for p in points if p.get("on_frontier") and p.get("task_gain") is not None]
    front.sort(key=lambda p: p["task_gain"])
    for point in points:
        point["vs_neighbour"], point["ordering_significant"] = None, None

    def system(point: dict[str, Any]) -> list[tuple[str, str]]:
        return [(base, "base")] if point["method"] == "base" else members.get((point["method"], int(point["size"])), [])

    results = []
    for lower, upper in zip(front, front[1:]):
        a, b = system(lower), system(upper)
        if not a or not b:
            continue
        result = compare_systems(items, suite, metric, a, b, settings,
                                 stored=lambda cell, st: index.get(cell, st, suite, metric))
        entry = comparison_entry(result, table.direction(metric))
        entry["neighbour"] = "base" if lower["method"] == "base" else f"{lower['method']}-n{lower['size']}"
        entry["suite"] = suite
        upper["vs_neighbour"] = entry
        results.append(entry)
    label_family(results, settings)
    for point in front:
        entry = point["vs_neighbour"]
        if entry is not None:
            point["ordering_significant"] = None if entry["p_adjusted"] is None else entry["p_adjusted"] < settings.alpha


# ----------------------------------------------------------------------------- methods at each size


def cells_by_method_size(index: ScoreIndex, keep: Callable[[str], bool] = lambda cell: True,
                         ) -> dict[tuple[str, int], dict[int, str]]:
    """(method, size) -> {seed: cell key} of the fine-tuned cells in ``index`` that ``keep`` accepts."""
    groups: dict[tuple[str, int], dict[int, str]] = {}
    for cell in index.cells:
        if keep(str(cell["cell"])):
            groups.setdefault((str(cell["method"]), int(cell["size"])), {})[int(cell["seed"])] = str(cell["cell"])
    return groups


#: Learning-rate choices too close to trust (lr_selection's ``agreement``): some seed alone prefers
#: the runner-up, or the two means are equal.
DOUBTFUL_CHOICES = ("seeds disagree", "tie")


def runner_up_checks(
    scores: pd.DataFrame,
    selection: Any,
    roles: SuiteRoles,
    table: MetricTable,
    settings: SignificanceConfig,
    items: SampleItems,
    selected_entries: list[dict[str, Any]],
    stage: str = "final",
) -> list[dict[str, Any]]:
    """The method comparison redone with each doubtful learning-rate choice's runner-up.

    When the validation loss cannot tell a method's two best rates apart at some size (``agreement``
    "seeds disagree" or "tie", see lr_selection), the comparison of methods there rests on a coin
    flip. For each such (method, size), the comparison is run again with that method's runner-up
    cells in place of the selected ones (every other (method, size) unchanged, p-values adjusted over
    that redone family, as for the selected cells), on the suites the runner-up was scored on (with
    ``evaluate.lr_grid_cells: selected`` the task suites). Each entry says which side was swapped,
    the verdict at the selected rate, and whether the verdict changes with the swap.

    ``scores``: the run's scores before the selection filter (every planned cell); ``selection``:
    the run's :class:`~curatune.evaluate.analysis.lr_selection.LrSelection`."""
    at_selected = {(e["method_b"], e["size"], e["suite"]): e for e in selected_entries}
    checks = []
    for choice in selection.choices:
        if choice.get("agreement") not in DOUBTFUL_CHOICES or choice.get("runner_up") is None:
            continue
        method, size = choice["method"], choice["size"]
        same = [c for c in selection.cells if c["method"] == method and c["size"] == size]
        chosen = {c["cell"] for c in same if c["lr"] == choice["lr"]}
        runner = {c["cell"] for c in same if c["lr"] == choice["runner_up"]}
        keep = scores["cell"].map(lambda cell: cell in runner or (cell not in chosen and selection.compares(cell)))
        redone = compare_methods(ScoreIndex(scores[keep].reset_index(drop=True)), roles, table, settings, items, stage)
        for entry in redone["entries"]:
            if entry["size"] != size or method not in (entry["method_a"], entry["method_b"]):
                continue
            for side in ("a", "b"):
                entry[f"lr_{side}"] = (choice["runner_up"] if entry[f"method_{side}"] == method
                                       else selection.selected_rate(entry[f"method_{side}"], size))
            selected = at_selected.get((entry["method_b"], size, entry["suite"]))
            entry.update(swapped=method, selected_lr=choice["lr"], agreement=choice["agreement"],
                         label_at_selected=selected["label"] if selected else None,
                         verdict_changes=None if selected is None else selected["label"] != entry["label"])
            checks.append(entry)
    return checks


def reference_method(methods: list[str]) -> str:
    """The method the others are compared with: full fine-tuning when the run has it (the
    baseline of Biderman et al. 2024), else LoRA (the usual default), else the first by name."""
    for preferred in ("full", "lora"):
        if preferred in methods:
            return preferred
    return min(methods)


def compare_methods(
    index: ScoreIndex,
    roles: SuiteRoles,
    table: MetricTable,
    settings: SignificanceConfig,
    items: SampleItems,
    stage: str = "final",
) -> dict[str, Any]:
    """Every method against the reference method at each size both trained, on every suite's
    headline metric: the seeds both have pooled into one system per method, items paired by
    example id, plus each seed's own difference. In a learning-rate grid run ``index`` holds the
    selected rate's cells only, so this is the comparison at matched strength. p-values are
    adjusted over every (method, size, suite) entry together."""
    groups = cells_by_method_size(index)
    methods = sorted({method for method, _ in groups})
    if len(methods) < 2:
        return {"reference": None, "stage": stage, "entries": []}
    reference = reference_method(methods)
    entries = []
    for method in (m for m in methods if m != reference):
        for size in sorted(size for m, size in groups if m == method and (reference, size) in groups):
            seeds = sorted(set(groups[(reference, size)]) & set(groups[(method, size)]))
            if not seeds:
                continue
            cells_a = [groups[(reference, size)][seed] for seed in seeds]
            cells_b = [groups[(method, size)][seed] for seed in seeds]
            for suite in roles.task + roles.general:
                metric = roles.primary[suite]
                values = [[index.get(cell, stage, suite, metric) for cell in cells] for cells in (cells_a, cells_b)]
                if any(v is None for side in values for v in side):
                    continue
                entry = paired_entry(items, suite, metric, [(c, stage) for c in cells_a],
                                     [(c, stage) for c in cells_b], settings, table,
                                     stored=lambda cell, st, s=suite, m=metric: index.get(cell, st, s, m))
                entry.update(method_a=reference, method_b=method, size=size, seeds=seeds, suite=suite,
                             role="task" if suite in roles.task else "general",
                             per_seed={seed: b - a for seed, a, b in zip(seeds, *values)})
                entries.append(entry)
    label_family(entries, settings)
    return {"reference": reference, "stage": stage, "entries": entries}
