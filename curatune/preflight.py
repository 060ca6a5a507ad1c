"""What `curatune config check` verifies beyond the schema, before any compute.

The schema (config.py) says whether a config is well formed; this module says whether it can
run here: its data files exist, its models can be named, and curate has something to read.
Nothing is loaded or downloaded: a hub id passes on its shape, since only the hub knows more.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

from curatune.config import ExperimentConfig, SourceConfig
from curatune.data.loaders import expand_path
from curatune.errors import CuratuneError
from curatune.evaluate.config import lm_eval_missing_message
from curatune.models import model_name_problem
from curatune.rundir import RunDir
from curatune.tracking import tracker_problems


def config_problems(config: ExperimentConfig) -> list[str]:
    """Every problem found, one line each naming the key; empty when the config can run."""
    problems: list[str] = []
    for key in ("sources", "eval_sources"):
        for i, source in enumerate(getattr(config.data, key)):
            problems += _source_problems(f"data.{key}.{i}", source)
    if not config.data.sources and not RunDir(config.run_dir).kept.exists():
        problems.append(
            "data.sources is empty: curate has nothing to read (add {path: FILE} under data.sources, "
            "or run `curatune curate --input FILE --out DIR`)"
        )
    if config.data.labels and not Path(config.data.labels).is_file():
        problems.append(f"data.labels = {config.data.labels}: no such file")
    for i, suite in enumerate(config.evaluate.suites):
        path = getattr(suite, "path", None)
        if path and not path.startswith("hf:") and not Path(path).exists():
            problems.append(f"evaluate.suites.{i}.path = {path}: no such file or folder (suite {suite.name!r})")
        if suite.kind == "lm_eval" and importlib.util.find_spec("lm_eval") is None:
            problems.append(f"evaluate.suites.{i}: {lm_eval_missing_message(suite.name)}")
    for key, embedder in (("base", False), ("embedder", True)):
        problem = model_name_problem(getattr(config.model, key), embedder=embedder)
        if problem:
            problems.append(f"model.{key}: {problem}")
    problems += tracker_problems(config.train.report_to)
    if config.curate.cache_dir and Path(config.curate.cache_dir).is_file():
        problems.append(f"curate.cache_dir = {config.curate.cache_dir}: a file, not a folder")
    return problems


def _source_problems(key: str, source: SourceConfig) -> list[str]:
    if source.format == "parallel":
        return [f"{key}.{field} = {getattr(source, field)}: no such file"
                for field in ("path", "target_path") if not Path(getattr(source, field)).is_file()]
    try:
        expand_path(source.path)
    except CuratuneError as exc:
        return [f"{key}.path: {exc}"]
    return []
