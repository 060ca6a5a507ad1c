"""The run-directory contract: the only interface between stages and the app.

Layout (documented in the README, keep both in step)::

    RUN_DIR/
      manifest.json                 resolved config, package versions, git commit, timestamps
      config.yaml                   the resolved config of the latest stage, re-runnable as is
      curate/
        kept.parquet                records that survived curation (RECORD_COLUMNS)
        removed.parquet             every removed record + step, reason, detail, duplicate_of, cluster_id
        report.json                 counts, per-step stats, category distributions
      train/
        plan.json                   every cell of the sweep grid
        heldout.parquet             the held-out evaluation split, carved before subsetting
        pool.parquet                the records subsets are drawn from (held-out removed)
        sweep_config.json           training settings the finished cells were trained with
        subsets.parquet             which record ids each (seed, size) subset holds
        <method>/n<size>/s<seed>/   one cell: weights, train_log.jsonl, early/, final/, done.json | failed.json
      eval/
        scores.parquet              long form: cell, method, size, seed, stage, suite, metric, value, n_items
        samples/<suite>/<cell>__<stage>.parquet   per-example outputs
        analysis.json               learning vs forgetting, saturation fits, early-vs-final agreement
        saturation_curves.parquet   fitted curves with confidence bands, for plots

Every write goes through a temp file in the same folder plus ``os.replace``, so a
crash never leaves a half-written file where a reader looks.
"""
from __future__ import annotations

import contextlib
import io
import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator

import pandas as pd
import yaml

from curatune.errors import environment_error
from curatune.runcheck import read_run_json
from curatune.runlock import default_file_mode, temp_prefix

MANIFEST = "manifest.json"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # named after this process so a later run can remove it if we are killed (curatune.runlock)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.fchmod(fd, default_file_mode())  # mkstemp makes 0600; a plain open() obeys the umask
        os.close(fd)
    except OSError as exc:  # read-only or full disk, a file where the folder belongs: name the real path
        raise environment_error(exc, path) from exc
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise environment_error(exc, path) from exc
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, ensure_ascii=False, default=_json_default) + "\n")


def atomic_write_parquet(path: str | os.PathLike, frame: pd.DataFrame) -> None:
    buffer = io.BytesIO()
    frame.to_parquet(buffer, index=False)
    atomic_write_bytes(path, buffer.getvalue())


def read_json(path: str | os.PathLike) -> Any:
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "item"):  # numpy scalars
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serializable: {type(obj).__name__}")


class RunDir:
    """Paths of one experiment's run directory. Stages write here; the app only reads."""

    def __init__(self, root: str | os.PathLike):
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    # Top level
    @property
    def manifest(self) -> Path:
        return self.root / MANIFEST

    @property
    def config(self) -> Path:
        return self.root / "config.yaml"

    # curate/
    @property
    def curate(self) -> Path:
        return self.root / "curate"

    @property
    def kept(self) -> Path:
        return self.curate / "kept.parquet"

    @property
    def removed(self) -> Path:
        return self.curate / "removed.parquet"

    @property
    def curate_report(self) -> Path:
        return self.curate / "report.json"

    # train/
    @property
    def train(self) -> Path:
        return self.root / "train"

    @property
    def plan(self) -> Path:
        return self.train / "plan.json"

    @property
    def heldout(self) -> Path:
        return self.train / "heldout.parquet"

    @property
    def subsets(self) -> Path:
        return self.train / "subsets.parquet"

    def cell(self, method: str, size: int, seed: int) -> Path:
        return self.train / method / f"n{size}" / f"s{seed}"

    # eval/
    @property
    def eval(self) -> Path:
        return self.root / "eval"

    @property
    def scores(self) -> Path:
        return self.eval / "scores.parquet"

    @property
    def samples(self) -> Path:
        return self.eval / "samples"

    @property
    def analysis(self) -> Path:
        return self.eval / "analysis.json"

    @property
    def saturation_curves(self) -> Path:
        return self.eval / "saturation_curves.parquet"

    def is_run_dir(self) -> bool:
        return self.manifest.exists()

    def write_manifest(self, resolved_config: dict[str, Any], stage: str) -> None:
        """Create or update the manifest and config.yaml; each stage stamps when it started.

        Every stage rewrites config.yaml, so settings changed after curation (evaluate.analysis
        above all, which `curatune report` and the app read from it) are what the run shows."""
        now = datetime.now(timezone.utc).isoformat(timespec="seconds")
        manifest = read_run_json(self.manifest) if self.manifest.exists() else {"created": now}
        manifest.update(
            {
                "config": resolved_config,
                "packages": package_versions(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "git_commit": git_commit(),
                "updated": now,
            }
        )
        manifest.setdefault("stages", {})[stage] = {"started": now}
        atomic_write_json(self.manifest, manifest)
        atomic_write_text(self.config, yaml.safe_dump(resolved_config, sort_keys=False, allow_unicode=True))

    def stamp_stage_finished(self, stage: str, **summary: Any) -> None:
        manifest = read_run_json(self.manifest) if self.manifest.exists() else {}
        entry = manifest.setdefault("stages", {}).setdefault(stage, {})
        entry["finished"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
        entry.update(summary)
        atomic_write_json(self.manifest, manifest)


_TRACKED_PACKAGES = (
    "curatune", "torch", "transformers", "peft", "datasets", "pandas", "pyarrow", "datasketch",
    "sentence-transformers", "scikit-learn", "sacrebleu", "evaluate", "streamlit", "accelerate",
)


def package_versions() -> dict[str, str]:
    versions = {}
    for name in _TRACKED_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """Commit of the curatune checkout, when it is one (editable installs)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None if out.returncode == 0 else None
