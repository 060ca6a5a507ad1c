"""The curation stage: load sources, run the pipeline, write the run directory.

``run_curate`` is what ``curatune curate`` and ``curatune run``/``demo`` call. It writes
kept.parquet and removed.parquet first and report.json last; report.json carries a
fingerprint of the config and input files, so a re-run with nothing changed returns the
finished report instead of recomputing (delete curate/ or pass force=True to redo).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any, Callable

from curatune.config import ExperimentConfig
from curatune.curate.base import CurateContext, Progress, RichProgress
from curatune.curate.decontaminate import lm_eval_data_files, read_eval_texts
from curatune.curate.detection import detection_report, read_labels
from curatune.curate.pipeline import CurationPipeline
from curatune.data.loaders import expand_path, load_sources
from curatune.errors import ConfigError
from curatune.records import records_to_frame
from curatune.rundir import RunDir, atomic_write_json, atomic_write_parquet, read_json
from curatune.runlock import holds_stage_lock


def eval_items_loader(config: ExperimentConfig) -> Callable[[], list[tuple[str, str]]]:
    """Texts of every evaluation item the experiment will score (for decontamination)."""

    def load() -> list[tuple[str, str]]:
        items: list[tuple[str, str]] = []
        if config.data.eval_sources:
            for record in load_sources(config.data.eval_sources).records:
                items.append((f"{record.source}:{record.id}:prompt", record.prompt))
                items.append((f"{record.source}:{record.id}:response", record.response))
        for suite in config.evaluate.suites:
            path = getattr(suite, "path", None) if not isinstance(suite, dict) else suite.get("path")
            kind = getattr(suite, "kind", None) if not isinstance(suite, dict) else suite.get("kind")
            if path and kind == "lm_eval":  # a task YAML: the items are its local data files
                for data_file in lm_eval_data_files(str(path)):
                    items += read_eval_texts(str(data_file))
            elif path:
                items += read_eval_texts(str(path))
        return items

    return load


def build_context(config: ExperimentConfig, progress: Progress | None = None) -> CurateContext:
    cur = config.curate
    return CurateContext(
        workers=cur.workers,
        cache_dir=Path(cur.cache_dir).expanduser() if cur.cache_dir else None,
        embedder=config.model.embedder,
        model=config.model.base,
        device=config.model.device,
        dtype=config.model.dtype,
        trust_remote_code=config.model.trust_remote_code,
        eval_items_loader=eval_items_loader(config),
        progress=progress or Progress(),
    )


def fingerprint(config: ExperimentConfig, labels: str | None) -> str:
    """Hash of everything curation depends on: its config sections and the input files' stats."""
    resolved = config.resolved()
    parts: dict[str, Any] = {
        "data": resolved["data"], "curate": resolved["curate"], "model": resolved["model"],
        "suites": [getattr(s, "path", None) for s in config.evaluate.suites], "labels": labels,
    }
    files = []
    for source in list(config.data.sources) + list(config.data.eval_sources):
        try:
            found, _ = expand_path(source.path)
        except Exception:  # a missing file fails loudly in the loader, not here
            found = [source.path]
        for f in found:
            try:
                st = os.stat(f)
                files.append([f, st.st_size, st.st_mtime_ns])
            except OSError:
                files.append([f, None, None])
    parts["files"] = files
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:20]


@holds_stage_lock("curate")  # one process per stage on a run directory
def run_curate(
    config, run_dir: RunDir, labels: str | None = None, *, force: bool = False, progress: bool | None = None,
    console=None,
) -> dict[str, Any]:
    """Curate ``config.data.sources`` into ``run_dir/curate``; return the report."""
    if not config.data.sources:
        raise ConfigError("data.sources is empty: nothing to curate (add at least one {path: ...})")
    for source in config.data.sources:  # a missing source fails before anything is written
        if source.format != "parallel":
            expand_path(source.path)
    run_dir.write_manifest(config.resolved(), "curate")
    labels = labels or config.data.labels
    key = fingerprint(config, labels)
    if not force and run_dir.curate_report.exists() and run_dir.kept.exists() and run_dir.removed.exists():
        try:
            previous = read_json(run_dir.curate_report)
        except (OSError, ValueError):
            previous = {}
        if previous.get("fingerprint") == key:
            previous["resumed"] = True
            run_dir.stamp_stage_finished("curate", kept=previous["kept"], input_records=previous["input_records"], skipped=True)
            return previous

    show = config.curate.progress if progress is None else progress
    loaded = load_sources(config.data.sources)
    rich = RichProgress(console) if show else None
    context = build_context(config, rich)
    pipeline = CurationPipeline(config.curate.effective_steps(), context)
    if rich:
        with rich:
            result = pipeline.run(loaded.records, loaded.rejected)
    else:
        result = pipeline.run(loaded.records, loaded.rejected)

    report = result.report
    report["load_warnings"] = list(loaded.warnings)[:50]
    if labels:
        inputs = [(r.source, r.id) for r in loaded.records]
        inputs += [(str(s), str(i)) for s, i in zip(loaded.rejected.get("source", []), loaded.rejected.get("id", []))]
        report["detection"] = detection_report(read_labels(labels), inputs, result.removed)
    report["fingerprint"] = key
    atomic_write_parquet(run_dir.kept, records_to_frame(result.kept))
    atomic_write_parquet(run_dir.removed, result.removed)
    atomic_write_json(run_dir.curate_report, report)  # last: its presence means the stage finished
    run_dir.stamp_stage_finished(
        "curate", input_records=report["input_records"], kept=report["kept"], removed=report["removed"],
        seconds=report["seconds"],
    )
    return report
