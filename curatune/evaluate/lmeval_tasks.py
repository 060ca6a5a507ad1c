"""EleutherAI lm-evaluation-harness tasks as an evaluation suite (kind ``lm_eval``).

lm-eval does the task: its registry (``mmlu``, ``gsm8k``, ``ifeval``, ...) or a task YAML
over local files, the prompts and few-shot examples, the filters and the metrics. curatune
hands it the model the runner already loaded, wrapped in lm-eval's own ``HFLM`` (which
accepts a model object), calls ``lm_eval.simple_evaluate`` and turns its per-sample log
into the samples frame every suite writes, so the paired tests work on the items.

Log-likelihood requests (multiple-choice and loglikelihood tasks) can go through curatune's
shared-prefix scorer (:mod:`curatune.evaluate.lm_scoring`) instead of HFLM's forward loop:
the tokens are HFLM's own (its ``_encode_pair``), only the batching differs, so the numbers
are lm-eval's (``bench/eval_lmeval_tasks.py`` checks it item by item). Generation and
rolling log-likelihood always run in HFLM.

lm-eval is an optional dependency (``pip install 'curatune[lmeval]'``); it is imported on
use, and a configured suite without it stops with one clear error before any model loads.
"""
from __future__ import annotations

import contextlib
import difflib
import functools
import hashlib
import json
import logging
import math
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence
from unittest import mock

import numpy as np
import pandas as pd

from curatune.errors import ConfigError, DataError
from curatune.evaluate.config import (
    LMEVAL_MIN_VERSION,
    LmEvalSuite,
    lm_eval_missing_message,
)
from curatune.evaluate.lm_scoring import LoglikelihoodScorer, Request

#: Per-item values lm-eval keeps as (log-likelihood, length) pairs, and the sample columns
#: they become: the analysis recomputes these metrics from per-item sums (a ratio test).
_RATIO_METRICS = {"word_perplexity": "n_words", "byte_perplexity": "n_bytes", "bits_per_byte": "n_bytes"}


def import_lm_eval(suite: str) -> Any:
    """The lm_eval package, or one clear ConfigError saying how to install it."""
    try:
        import lm_eval  # optional dependency: pip install 'curatune[lmeval]'
    except ImportError:
        raise ConfigError(lm_eval_missing_message(suite)) from None
    version = getattr(lm_eval, "__version__", "0")
    if _version_tuple(version) < _version_tuple(LMEVAL_MIN_VERSION):
        raise ConfigError(f"suite {suite!r} (kind lm_eval) needs lm-eval >= {LMEVAL_MIN_VERSION}, found {version}: "
                          "pip install -U 'curatune[lmeval]'")
    return lm_eval


def _version_tuple(version: str) -> tuple[int, ...]:
    parts = []
    for piece in version.split(".")[:3]:
        digits = "".join(c for c in piece if c.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


# ----------------------------------------------------------------------------- loading tasks


@dataclass
class LoadedTasks:
    """The configured task built once per process: lm-eval objects plus what curatune needs."""

    name: str  # the configured task, group or tag
    objects: list[Any]  # what simple_evaluate gets (the built Task or Group objects)
    leaves: dict[str, Any]  # leaf task name -> Task
    n_docs: dict[str, int]  # leaf task name -> number of evaluation documents
    filters: dict[str, str]  # leaf task name -> the filter whose results are reported
    data_root: Path | None  # the folder relative data_files resolve against (local YAML)
    manager: Any  # the TaskManager that built them (simple_evaluate would otherwise index lm-eval's registry)
    #: what each leaf task is, as loaded (simple_evaluate later writes its settings into the config)
    config_digests: dict[str, str] = field(default_factory=dict)
    data_digests: dict[str, str] = field(default_factory=dict)  # local data file name -> content hash
    lm_eval_version: str = ""
    doc_ids: dict[str, list[int]] = field(default_factory=dict)  # leaf -> scored documents (all when absent)


def load_tasks(spec: LmEvalSuite) -> LoadedTasks:
    """Build the suite's lm-eval task (downloading a registry task's dataset when needed)."""
    lm_eval = import_lm_eval(spec.name)
    path = Path(spec.path).expanduser().resolve() if spec.path else None
    if path is not None and not path.exists():
        raise ConfigError(f"suite {spec.name!r}: {path}: no such task YAML file or folder")
    data_root = (path if path.is_dir() else path.parent) if path is not None else None
    target = spec.task or str(path)
    with _lm_eval_quiet(), _working_dir(data_root):
        if path is None:
            manager = _task_manager(None, registry=True)
            loaded = _load(spec, manager, target, registry_next=False)
        else:
            # Indexing lm-eval's own registry takes tens of seconds; a local task needs it only
            # when it refers to registered tasks (a local group listing mmlu subjects).
            manager = _task_manager(data_root, registry=False)
            if path.is_dir() and not spec.task:
                raise ConfigError(f"suite {spec.name!r}: {path} is a folder of task YAMLs; name the one to run "
                                  f"with task (found: {', '.join(manager.all_tasks) or 'none'})")
            if spec.task and spec.task not in manager.all_tasks:
                raise _unknown_task(spec, manager, data_root)
            loaded = _load(spec, manager, target, registry_next=True)
            if loaded is None:
                manager = _task_manager(data_root, registry=True)
                loaded = _load(spec, manager, target, registry_next=False)
    tasks, groups = loaded["tasks"], loaded["groups"]
    name = _configured_name(spec, path, tasks, groups)
    if name in groups:
        objects = [groups[name]]
    elif name in tasks:
        objects = [tasks[name]]
    else:  # a tag: its tasks, each on its own
        objects = list(tasks.values())
    filters = {leaf: _reported_filter(spec, leaf, task) for leaf, task in tasks.items()}
    n_docs = {leaf: len(task.eval_docs) for leaf, task in tasks.items()}
    configs, data = _task_digests(tasks, data_root)
    return LoadedTasks(name, objects, dict(tasks), n_docs, filters, data_root, manager, configs, data,
                       lm_eval.__version__)


def _task_manager(include: Path | None, *, registry: bool) -> Any:
    from lm_eval.tasks import TaskManager  # optional dependency

    return TaskManager(include_path=str(include) if include else None, include_defaults=registry)


def _load(spec: LmEvalSuite, manager: Any, target: str, *, registry_next: bool) -> dict[str, Any] | None:
    """The built task (lm-eval's {"tasks", "groups"}); None when a name it refers to is not
    indexed and ``registry_next`` says lm-eval's registry is tried next."""
    try:
        return manager.load([target])
    except KeyError:
        if registry_next:
            return None
        raise _unknown_task(spec, manager, getattr(manager, "include_path", None)) from None
    except Exception as exc:  # noqa: BLE001 - network, missing data file, a broken YAML: all the user's to fix
        raise DataError(_load_failure(spec, target, exc)) from None


def _unknown_task(spec: LmEvalSuite, manager: Any, where: Any) -> ConfigError:
    target = spec.task or str(spec.path)
    close = difflib.get_close_matches(target, manager.all_tasks, n=3)
    hint = f"; did you mean {', '.join(close)}?" if close else ""
    place = f" in {where}" if where else ""
    return ConfigError(f"suite {spec.name!r}: lm-eval has no task, group or tag {target!r}{place}{hint}")


def _load_failure(spec: LmEvalSuite, target: str, exc: Exception) -> str:
    text = f"suite {spec.name!r}: cannot load lm-eval task {target!r}: {type(exc).__name__}: {exc}"
    if spec.path:
        return text + " (check the YAML and its dataset_kwargs.data_files, relative to the YAML's folder)"
    return (text + " (a registered task downloads its dataset from the Hugging Face hub; offline, write a task "
            "YAML over local files and give it as path: see docs/evaluate.md)")


def _configured_name(spec: LmEvalSuite, path: Path | None, tasks: dict, groups: dict) -> str:
    if spec.task:
        return spec.task
    # a single YAML file: the group it defines, else its one task
    top = [g for g in groups if not any(g in grp.child_names for grp in groups.values())]
    if top:
        return top[0]
    if len(tasks) == 1:
        return next(iter(tasks))
    raise ConfigError(f"suite {spec.name!r}: {path} defines several tasks ({', '.join(tasks)}); name one with task")


def _reported_filter(spec: LmEvalSuite, leaf: str, task: Any) -> str:
    names = [f.name for f in getattr(task, "_filters", [])] or ["none"]
    if spec.filter is None:
        return names[0]
    if spec.filter not in names:
        raise ConfigError(f"suite {spec.name!r}: lm-eval task {leaf!r} has no filter {spec.filter!r}; "
                          f"its filters: {', '.join(names)}")
    return spec.filter


def task_fingerprint(loaded: LoadedTasks) -> dict[str, Any]:
    """What the scores depend on besides the model and the suite settings: lm-eval's version,
    each task's resolved config and the content of its local data files, the scored documents."""
    doc_ids = {leaf: hashlib.sha1(json.dumps(ids).encode()).hexdigest()[:16] for leaf, ids in loaded.doc_ids.items()}
    return {"lm_eval": loaded.lm_eval_version, "task": loaded.name, "configs": loaded.config_digests,
            "data": loaded.data_digests, "docs": doc_ids, "n_docs": loaded.n_docs, "filters": loaded.filters}


def _task_digests(tasks: dict[str, Any], data_root: Path | None) -> tuple[dict[str, str], dict[str, str]]:
    configs, data = {}, {}
    for leaf, task in sorted(tasks.items()):
        config = _stable(task.dump_config())
        config.get("metadata", {}).pop("config_source", None)  # where the YAML sits, not what it says
        configs[leaf] = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
        for file in _local_data_files(task, data_root):
            data[file.name] = _file_digest(file)
    return configs, data


def _stable(value: Any) -> Any:
    """A JSON-able copy with functions named by module and name (their repr holds an address)."""
    if isinstance(value, dict):
        return {str(k): _stable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_stable(v) for v in value]
    if callable(value):
        return f"{getattr(value, '__module__', '')}.{getattr(value, '__qualname__', type(value).__name__)}"
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def _local_data_files(task: Any, root: Path | None) -> list[Path]:
    kwargs = getattr(task.config, "dataset_kwargs", None) or {}
    files = kwargs.get("data_files")
    if isinstance(files, dict):
        names = [f for v in files.values() for f in (v if isinstance(v, list) else [v])]
    elif isinstance(files, list):
        names = files
    else:
        names = [files] if files else []
    out = []
    for name in names:
        candidate = Path(str(name)).expanduser()
        if not candidate.is_absolute() and root is not None:
            candidate = root / candidate
        if candidate.is_file():
            out.append(candidate)
    return out


def _file_digest(path: Path) -> str:
    digest = hashlib.sha1()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# ----------------------------------------------------------------------------- the model


@functools.cache
def _lm_class() -> type:
    """HFLM with an optional fast path for log-likelihood requests (built on first use: lm-eval
    is an optional dependency, so the subclass cannot sit at module level)."""
    from lm_eval.models.huggingface import HFLM  # optional dependency

    class CuratuneHFLM(HFLM):
        def __init__(self, model: Any, tokenizer: Any, *, batch_size: int, fast_loglikelihood: bool,
                     progress: bool):
            super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
            self.fast_loglikelihood = fast_loglikelihood
            self.progress = progress
            self._doc_keys: list[tuple[Any, Any]] | None = None

        def loglikelihood(self, requests, disable_tqdm: bool = False):
            if not self.fast_loglikelihood:
                return super().loglikelihood(requests, disable_tqdm=disable_tqdm or not self.progress)
            # HFLM tokenizes (its _encode_pair, in request order) and hands the tokens to
            # _loglikelihood_tokens; the requests' documents say which ones share a prompt.
            self._doc_keys = [(r.task_name, r.doc_id) for r in requests]
            try:
                return super().loglikelihood(requests, disable_tqdm=True)
            finally:
                self._doc_keys = None

        def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs=None):
            keys = self._doc_keys
            if keys is None or len(keys) != len(requests):  # rolling windows: HFLM's own loop
                return super()._loglikelihood_tokens(requests, disable_tqdm=disable_tqdm, override_bs=override_bs)
            return score_token_requests(self.model, self.tokenizer, [(c, k) for _, c, k in requests], keys,
                                        max_length=self.max_length, batch_size=self.batch_size,
                                        progress=self.progress)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=disable_tqdm or not self.progress)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=disable_tqdm or not self.progress)

    return CuratuneHFLM


def score_token_requests(model: Any, tokenizer: Any, requests: Sequence[tuple[Sequence[int], Sequence[int]]],
                         keys: Sequence[Any], *, max_length: int, batch_size: int,
                         progress: bool = False) -> list[tuple[float, bool]]:
    """(log-likelihood, is_greedy) of each (context tokens, continuation tokens) request, in order;
    requests with the same key (one document's choices) share their common prefix."""
    groups: dict[Any, list[int]] = {}
    for i, key in enumerate(keys):
        groups.setdefault(key, []).append(i)
    scorer = LoglikelihoodScorer(model, tokenizer, max_length=max_length, batch_size=batch_size,
                                 progress=progress, desc="lm-eval loglikelihood")
    members = list(groups.values())
    scored = scorer.score_groups([[Request(tuple(requests[i][0]), tuple(requests[i][1])) for i in g]
                                  for g in members])
    out: list[tuple[float, bool] | None] = [None] * len(requests)
    for group, results in zip(members, scored):
        for i, result in zip(group, results):
            out[i] = (result.loglik, result.is_greedy)
    return out  # type: ignore[return-value]


# ----------------------------------------------------------------------------- running


@dataclass
class TaskRun:
    """What one model's run of the task produced, in curatune's terms."""

    metrics: dict[str, float]
    n_items: dict[str, int]
    per_item: list[dict[str, Any]]
    signature: str
    notes: list[str]


def run_tasks(model: Any, tokenizer: Any, spec: LmEvalSuite, loaded: LoadedTasks, *, progress: bool) -> TaskRun:
    """Score one loaded model on the suite's lm-eval task through ``lm_eval.simple_evaluate``."""
    from lm_eval import simple_evaluate  # optional dependency

    samples = {leaf: ids for leaf, ids in loaded.doc_ids.items() if len(ids) < loaded.n_docs[leaf]}
    with _lm_eval_quiet(), _rng_kept(), _no_environment_report():
        lm = _lm_class()(model, tokenizer, batch_size=spec.batch_size, fast_loglikelihood=spec.scorer == "curatune",
                         progress=progress)
        out = simple_evaluate(
            model=lm, tasks=list(loaded.objects), task_manager=loaded.manager, num_fewshot=spec.num_fewshot,
            fewshot_random_seed=spec.fewshot_seed, samples=samples or None, log_samples=True,
            bootstrap_iters=0, apply_chat_template=spec.apply_chat_template,
            fewshot_as_multiturn=spec.apply_chat_template, gen_kwargs=dict(spec.gen_kwargs) or None,
        )
    return convert_results(out, spec, loaded)


def convert_results(out: dict[str, Any], spec: LmEvalSuite, loaded: LoadedTasks) -> TaskRun:
    """lm-eval's results and per-sample log as curatune metrics and per-item rows."""
    per_item: list[dict[str, Any]] = []
    skipped: set[str] = set()
    for leaf, task in loaded.leaves.items():
        wanted = loaded.filters[leaf]
        rows = [s for s in out["samples"].get(leaf, []) if s.get("filter", "none") == wanted]
        for sample in sorted(rows, key=lambda s: s["doc_id"]):  # doc_id: the document's index in the task
            per_item.append(_item_row(leaf, int(sample["doc_id"]), sample, task, skipped))
    if not per_item:
        raise DataError(f"suite {spec.name!r}: lm-eval returned no samples for {loaded.name!r}")

    metrics, n_items, aggregated = _corpus_metrics(out, loaded, per_item)
    notes = [f"{metric}: lm-eval's per-item values are not single numbers (e.g. one per instruction), so the "
             "samples have no column for it and it gets no paired test" for metric in sorted(skipped) if metric in metrics]
    if not aggregated:
        notes.append(f"lm-eval reports no aggregate for {loaded.name!r}; each metric is the mean over its "
                     f"{len(per_item)} items")
    return TaskRun(metrics, n_items, per_item, _signature(out, spec, loaded, len(per_item)), notes)


def _item_row(leaf: str, doc_index: int, sample: dict[str, Any], task: Any, skipped: set[str]) -> dict[str, Any]:
    arguments = sample.get("arguments") or []
    first = arguments[0] if arguments else ("",)
    row: dict[str, Any] = {"example_id": f"{leaf}/{doc_index}", "task": leaf, "doc_index": doc_index,
                           "prompt": first[0] if isinstance(first[0], str) else str(first[0])}
    output_type = getattr(task, "OUTPUT_TYPE", None)
    responses = sample.get("filtered_resps")
    if output_type == "multiple_choice":
        logliks = [float(r[0]) for r in responses]
        choices = [str(c) for c in task.doc_to_choice(sample["doc"])]
        gold = task.doc_to_text(sample["doc"]) if getattr(task, "multiple_input", False) else sample.get("target")
        row["reference"] = _choice_text(gold, choices)
        row["output"] = choices[int(np.argmax(logliks))] if len(logliks) == len(choices) else ""
        row["logliks"] = logliks
    elif output_type == "generate_until":
        raw = sample.get("resps") or [[""]]
        row["reference"] = _text(sample.get("target"))
        row["output"] = _text(raw[0][0] if raw and raw[0] else "")
        row["extracted"] = _text(responses[0] if isinstance(responses, list) and responses else responses)
    else:  # loglikelihood, loglikelihood_rolling
        row["reference"] = _text(sample.get("target"))
        row["output"] = ""
    for metric in sample.get("metrics", []):
        value = sample.get(metric)
        if metric in _RATIO_METRICS and isinstance(value, (list, tuple)) and len(value) == 2:
            row["loglik"], row[_RATIO_METRICS[metric]] = float(value[0]), float(value[1])
        elif metric == "perplexity" and isinstance(value, (int, float, np.floating)):
            # lm-eval's per-item "perplexity" (lambada) is the log-likelihood; its aggregate is
            # exp(-mean): keep the log-likelihood, as the lambada kind does, for the ratio test
            row["loglik"], row["perplexity"] = float(value), math.exp(min(-float(value), 700.0))
        elif isinstance(value, (bool, int, float, np.integer, np.floating)):
            row[metric] = float(value)
        else:
            skipped.add(metric)
    return row


def _choice_text(gold: Any, choices: list[str]) -> str:
    if isinstance(gold, str) and (gold in choices or not gold.isdigit()):
        return gold
    if isinstance(gold, (list, tuple)):
        return " | ".join(_choice_text(g, choices) for g in gold)
    try:
        return choices[int(gold)]
    except (TypeError, ValueError, IndexError):
        return _text(gold)


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)


def _corpus_metrics(out: dict[str, Any], loaded: LoadedTasks,
                    per_item: list[dict[str, Any]]) -> tuple[dict[str, float], dict[str, int], bool]:
    """lm-eval's aggregate of the configured task (group, or single task) for the reported filter,
    and True; for a tag or a group without an aggregate, the mean of the per-item values and False."""
    results = out["results"].get(loaded.name, {})
    filters = set(loaded.filters.values())
    metrics: dict[str, float] = {}
    for key, value in results.items():
        if "," not in key:
            continue
        metric, filter_name = key.split(",", 1)
        if metric.endswith("_stderr") or filter_name not in filters or isinstance(value, str):
            continue
        metrics[metric] = float(value)
    frame = pd.DataFrame(per_item)
    aggregated = bool(metrics)
    if not aggregated:
        names = {m for leaf in loaded.leaves for m in out.get("higher_is_better", {}).get(leaf, {})}
        for metric in sorted(names):
            value = _mean_over_items(frame, metric)
            if value is not None:
                metrics[metric] = value
    counts = {}
    for metric in metrics:
        column = metric if metric in frame.columns else ("loglik" if metric in _RATIO_METRICS else None)
        counts[metric] = int(frame[column].notna().sum()) if column in frame.columns else len(per_item)
    return metrics, counts, aggregated


def _mean_over_items(frame: pd.DataFrame, metric: str) -> float | None:
    """A metric over all items, aggregated as lm-eval aggregates it: perplexities from summed
    log-likelihoods and lengths, everything else as the mean of the per-item values."""
    if metric in _RATIO_METRICS and {"loglik", _RATIO_METRICS[metric]} <= set(frame.columns):
        rows = frame.dropna(subset=[_RATIO_METRICS[metric]])
        per_unit = -rows["loglik"].sum() / rows[_RATIO_METRICS[metric]].sum()
        return float(per_unit / math.log(2) if metric == "bits_per_byte" else math.exp(min(per_unit, 700.0)))
    if metric == "perplexity" and {"loglik", "perplexity"} <= set(frame.columns):
        return float(math.exp(min(-frame.dropna(subset=["perplexity"])["loglik"].mean(), 700.0)))
    if metric in frame.columns:
        return float(pd.to_numeric(frame[metric], errors="coerce").mean())
    return None


def _signature(out: dict[str, Any], spec: LmEvalSuite, loaded: LoadedTasks, n: int) -> str:
    versions = out.get("versions", {})
    shots = sorted({int(v) for k, v in out.get("n-shot", {}).items() if k in loaded.leaves})
    version = versions.get(loaded.name, versions.get(next(iter(loaded.leaves)), "?"))
    filters = sorted(set(loaded.filters.values()))
    return (f"lm-eval:{loaded.lm_eval_version}|task:{loaded.name}|version:{version}|"
            f"num_fewshot:{','.join(map(str, shots)) or '0'}|fewshot_seed:{spec.fewshot_seed}|"
            f"filter:{','.join(filters)}|chat_template:{'yes' if spec.apply_chat_template else 'no'}|"
            f"scorer:{spec.scorer}|n:{n}")


# ----------------------------------------------------------------------------- process state


@contextlib.contextmanager
def _working_dir(folder: Path | None) -> Iterator[None]:
    """Run the block in ``folder``: lm-eval hands a YAML's relative data_files to `datasets`,
    which resolves them against the working directory, and they should mean the YAML's folder."""
    if folder is None:
        yield
        return
    before = os.getcwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(before)


@contextlib.contextmanager
def _rng_kept() -> Iterator[None]:
    """simple_evaluate seeds Python's, numpy's and torch's global generators; put them back, so
    that scoring inside a sweep (the evaluate hook) does not change what training draws next."""
    import torch  # heavy; loaded anyway by the model under test

    python, numpy_state, torch_state = random.getstate(), np.random.get_state(), torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
    try:
        yield
    finally:
        random.setstate(python)
        np.random.set_state(numpy_state)
        torch.set_rng_state(torch_state)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)


@contextlib.contextmanager
def _no_environment_report() -> Iterator[None]:
    """simple_evaluate describes the machine in its result (torch's collect_env runs pip and
    nvidia-smi, then `git describe`, which prints 'fatal: not a git repository' outside a
    repository): seconds per call, for fields curatune does not keep. Skip those two."""
    import lm_eval.evaluator as evaluator  # optional dependency

    with contextlib.ExitStack() as stack:
        for name, stub in (("add_env_info", lambda storage: None), ("get_git_commit_hash", lambda: None)):
            if hasattr(evaluator, name):
                stack.enter_context(mock.patch.object(evaluator, name, stub))
        yield


@contextlib.contextmanager
def _lm_eval_quiet() -> Iterator[None]:
    """lm-eval logs every default it applies at INFO and WARNING; keep its errors only."""
    logger = logging.getLogger("lm_eval")
    before = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(before)
