"""The run-directory contract: the only interface between stages and the app.

Layout (documented in the README, keep both in step)::

    RUN_DIR/
      manifest.json                 resolved config, package versions, git commit, timestamps
      config.yaml                   the resolved config of the latest stage, re-runnable as is
      curate/
        kept.parquet                records that survived curation (RECORD_COLUMNS)
        removed.parquet             every removed record + step, reason, detail, duplicate_of, cluster_id,
                                    action, turn, span, kept_as, eval_item (records.LEDGER_COLUMNS)
        report.json                 counts, per-step stats, category distributions
      audit/labels.jsonl            right/wrong labels of audited records, keyed by (id, reason); outlives re-curation
      train/
        plan.json                   every cell of the sweep grid
        heldout.parquet             the held-out evaluation split, carved before subsetting
        pool.parquet                the records subsets are drawn from (held-out removed)
        sweep_config.json           training settings the finished cells were trained with
        subsets.parquet             which record ids each (seed, size) subset holds
        validation.parquet          the validation split (train.learning_rates / train.validation_size):
                                    carved from the pool before subsetting, never trained on
        <method>/n<size>/s<seed>/   one cell (key "<method>-n<size>-s<seed>"); a cell of a learning-rate
                                    grid (train.learning_rates) lives in <method>/lr<lr>/n<size>/s<seed>/
                                    (key "<method>-lr<lr>-n<size>-s<seed>", lr as format_lr writes it):
          cell.json                   settings of the current attempt, written when it starts
          train_log.jsonl             one line per logged step
          checkpoints/                trainer checkpoints to resume from (train.checkpoint_steps)
          early/, final/              weights: a peft adapter (lora, qlora) or a full model
          predictions.parquet         task: classification only: the cell's label per test example
          done.json | failed.json     written last: finished, or the error of the last attempt
        <parent method>+<merge>/n<size>/s<seed>/   a merged cell (`curatune merge`, the merge: section),
                                    e.g. lora+ties/n128/s0: early/, final/ and done.json as above, plus
          recipe.json                 its recipe: parents (cell keys), type, weights, density, ...
                                    Its size is the largest parent size, its seed the smallest parent seed.
                                      (done.json holds validation_loss when a validation split exists)
      eval/
        parts/<suite>/<cell>__<stage>.json        one finished evaluation unit (rows, signatures,
                                                  fingerprint); scores.parquet is rebuilt from these
        samples/<suite>/<cell>__<stage>.parquet   per-example outputs and metric values
        retention/<suite>-<digest>.safetensors    the base model's cached answers for a retention probe
        scores.parquet              long form: cell, method, size, seed, stage, suite, metric, value, n_items
        signatures.json             metric signatures per suite (sacrebleu-style)
        analysis.json               learning vs forgetting, saturation fits, early-vs-final agreement,
                                    the learning-rate selection (lr_selection)
        classification.json         task: classification only: paired tests of each size against
                                    the zero-shot baseline and SetFit against the frozen-embedder head
        saturation_curves.parquet   fitted curves with confidence bands, for plots
      tensorboard/<cell>/           event files when train.report_to has tensorboard: training
                                    logs from the Trainer, evaluation scores from evaluate

The base model's key is "base" (method "base", size 0, seed 0, stage "base").

Every write goes through a temp file in the same folder plus ``os.replace``, so a
crash never leaves a half-written file where a reader looks.

This module is the whole contract: every path above, the cell key, a cell's status and the
tolerant readers. Stages, the report and the app build no run-directory path of their own.
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterator, NamedTuple

import pandas as pd
import yaml

from curatune.errors import CuratuneError, environment_error, os_error_of
from curatune.runcheck import cell_repair_hint, damaged_done_marker, read_run_json
from curatune.runlock import default_file_mode, temp_prefix

MANIFEST = "manifest.json"

#: Key, method and stage of the base model in scores, samples and analysis.
BASE = "base"
#: Columns of eval/scores.parquet, in order.
SCORE_COLUMNS = ["cell", "method", "size", "seed", "stage", "suite", "metric", "value", "n_items"]
#: Text columns of an eval/samples file (the rest are example_id and per-metric values).
SAMPLE_TEXT_COLUMNS = ("prompt", "reference", "output")

# Files and folders of one cell folder.
DONE = "done.json"
FAILED = "failed.json"
CELL = "cell.json"
LOG = "train_log.jsonl"
EARLY = "early"
FINAL = "final"
CHECKPOINTS = "checkpoints"
RECIPE = "recipe.json"
#: Joins a merged cell's parent method and merge name: lora+ties, full+dare_linear, lora+scaled0.5.
MERGE_SEPARATOR = "+"
#: A classification cell's predicted label per test example (example_id, prediction).
PREDICTIONS = "predictions.parquet"
#: A cell's status, in the order the app lists them.
CELL_STATUSES = ("done", "running", "failed", "pending")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it into place only on success."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # named after this process so a later run can remove it if we are killed (curatune.runlock)
        fd, tmp = tempfile.mkstemp(prefix=temp_prefix(path.name), suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:  # read-only or full disk, a file where the folder belongs: name the real path
        raise environment_error(exc, path) from exc
    try:
        yield Path(tmp)
        # mkstemp makes 0600 and some writers (safetensors) replace the file with their own 0600
        # one; a plain open() obeys the umask, so the mode is set once the content is in place
        os.chmod(tmp, default_file_mode())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        # an OSError, or a writer's own error naming one (safetensors: "... (os error 28)")
        if isinstance(exc, Exception) and not isinstance(exc, CuratuneError) and os_error_of(exc) is not None:
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
    # Straight into the temp file: through a BytesIO the file's bytes were held twice more.
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            frame.to_parquet(f, index=False)
            f.flush()
            os.fsync(f.fileno())


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

    @property
    def audit_labels(self) -> Path:
        """Audit labels (`curatune audit`); outside curate/ so deleting curate/ to redo keeps them."""
        return self.root / "audit" / "labels.jsonl"

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

    @property
    def pool(self) -> Path:
        return self.train / "pool.parquet"

    @property
    def validation(self) -> Path:
        return self.train / "validation.parquet"

    @property
    def sweep_config(self) -> Path:
        return self.train / "sweep_config.json"

    def cell(self, method: str, size: int, seed: int, lr: float | None = None) -> Path:
        """train/<method>/n<size>/s<seed>, or train/<method>/lr<lr>/n<size>/s<seed> for a cell of a
        learning-rate grid (a cell without lr keeps the folder it always had)."""
        if lr is None:
            return self.train / method / f"n{size}" / f"s{seed}"
        return self.train / method / f"lr{format_lr(lr)}" / f"n{size}" / f"s{seed}"

    def cell_folders(self) -> Iterator[tuple["CellId", Path]]:
        """(CellId, folder) of every cell folder on disk, planned or not."""
        if not self.train.is_dir():
            return
        found = [(f"{f.parts[-3]}-{f.parts[-2]}-{f.parts[-1]}", f) for f in self.train.glob("*/n*/s*")]
        found += [(f"{f.parts[-4]}-{f.parts[-3]}-{f.parts[-2]}-{f.parts[-1]}", f) for f in self.train.glob("*/lr*/n*/s*")]
        for key, folder in sorted(found, key=lambda kf: kf[1]):
            parsed = parse_cell_key(key)
            if parsed is not None and folder.is_dir():
                yield parsed, folder

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
    def classification(self) -> Path:
        """eval/classification.json: the paired comparisons of a classification run."""
        return self.eval / "classification.json"

    @property
    def saturation_curves(self) -> Path:
        return self.eval / "saturation_curves.parquet"

    @property
    def signatures(self) -> Path:
        return self.eval / "signatures.json"

    @property
    def parts(self) -> Path:
        return self.eval / "parts"

    @property
    def retention(self) -> Path:
        return self.eval / "retention"

    # tensorboard/ (train.report_to: tensorboard)
    @property
    def tensorboard(self) -> Path:
        return self.root / "tensorboard"

    def tensorboard_dir(self, cell: str) -> Path:
        """tensorboard/<cell key>/: one event folder per cell ("base" for the base model)."""
        return self.tensorboard / cell

    def sample_file(self, suite: str, cell: str, stage: str) -> Path:
        """eval/samples/<suite>/<cell>__<stage>.parquet"""
        return self.samples / suite / f"{cell}__{stage}.parquet"

    def part_file(self, suite: str, cell: str, stage: str) -> Path:
        """eval/parts/<suite>/<cell>__<stage>.json"""
        return self.parts / suite / f"{cell}__{stage}.json"

    def sample_files(self) -> Iterator[tuple[str, str, str, Path]]:
        """(suite, cell, stage, path) of every per-example file on disk."""
        if not self.samples.is_dir():
            return
        for suite_dir in sorted(p for p in self.samples.iterdir() if p.is_dir()):
            for file in sorted(suite_dir.glob("*__*.parquet")):
                cell, _, stage = file.stem.rpartition("__")
                yield suite_dir.name, cell, stage, file

    def is_run_dir(self) -> bool:
        return self.manifest.exists()

    def write_manifest(self, resolved_config: dict[str, Any], stage: str) -> None:
        """Create or update the manifest and config.yaml; each stage stamps when it started.

        config.yaml holds ``run_dir: .``; the manifest keeps the absolute run_dir of the stage.

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
        # run_dir is written as "." (this folder): config.yaml sits in the run directory and relative
        # paths resolve against the config's own folder, so it re-runs as is, wherever the run is moved.
        rerunnable = {**resolved_config, "run_dir": "."} if "run_dir" in resolved_config else resolved_config
        atomic_write_text(self.config, yaml.safe_dump(rerunnable, sort_keys=False, allow_unicode=True))

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


# ----------------------------------------------------------------------------- cells


def format_lr(lr: float) -> str:
    """A learning rate as it appears in cell keys and folder names: the shortest scientific form
    that reads back as the same float (2e-4, 2.5e-05 -> 2.5e-5, 0.001 -> 1e-3)."""
    mantissa, _, exponent = f"{float(lr):e}".partition("e")
    mantissa = mantissa.rstrip("0").rstrip(".")
    text = f"{mantissa}e{int(exponent)}"
    if float(text) != float(lr):  # more digits than %e keeps: fall back to the exact repr
        text = repr(float(lr))
    return text


def cell_key(method: str, size: int, seed: int, lr: float | None = None) -> str:
    """The name of a cell everywhere: scores, samples, logs and the app.

    ``<method>-n<size>-s<seed>``; a cell of a learning-rate grid adds its rate after the method,
    ``<method>-lr<lr>-n<size>-s<seed>`` (e.g. lora-lr2e-4-n100-s0). A cell without lr keeps the
    key it always had, so runs made before learning-rate grids read unchanged."""
    if lr is None:
        return f"{method}-n{int(size)}-s{int(seed)}"
    return f"{method}-lr{format_lr(lr)}-n{int(size)}-s{int(seed)}"


_CELL_KEY = re.compile(
    r"^(?P<method>.+?)(?:-lr(?P<lr>\d+(?:\.\d+)?(?:e[-+]?\d+)?))?-n(?P<size>\d+)-s(?P<seed>\d+)$"
)


class CellId(NamedTuple):
    """What a cell key names: (method, size, seed, lr); lr is None outside a learning-rate grid."""

    method: str
    size: int
    seed: int
    lr: float | None = None


def parse_cell_key(key: str) -> CellId | None:
    """CellId(method, size, seed, lr) of a cell key, None for anything else (e.g. "base")."""
    match = _CELL_KEY.match(key)
    if not match:
        return None
    lr = float(match["lr"]) if match["lr"] else None
    return CellId(match["method"], int(match["size"]), int(match["seed"]), lr)


@dataclass(frozen=True)
class CellSpec:
    """One cell of the sweep grid: a method trained on a subset size with a seed, and with a
    learning rate of ``train.learning_rates`` when the method has a learning-rate grid
    (None: the method's single configured rate)."""

    method: str
    size: int
    seed: int
    lr: float | None = None

    @property
    def key(self) -> str:
        return cell_key(self.method, self.size, self.seed, self.lr)

    def path(self, run_dir: "RunDir") -> Path:
        return run_dir.cell(self.method, self.size, self.seed, self.lr)


def cell_status(folder: Path) -> str:
    """done (done.json, written last, exists), failed (failed.json), running (the folder exists
    without either marker: an attempt started, and is in progress or was killed) or pending."""
    if (folder / DONE).exists():
        return "done"
    if (folder / FAILED).exists():
        return "failed"
    if folder.is_dir():
        return "running"
    return "pending"


@dataclass
class CellInfo:
    """A cell as it is on disk: status, markers and the settings of its attempt."""

    method: str
    size: int
    seed: int
    path: Path
    status: str  # one of CELL_STATUSES
    done: dict[str, Any] | None = None
    failed: dict[str, Any] | None = None
    cell: dict[str, Any] | None = field(default=None, repr=False)  # cell.json: settings of the attempt
    lr: float | None = None  # the cell's rate in a learning-rate grid; None outside one

    @property
    def key(self) -> str:
        return cell_key(self.method, self.size, self.seed, self.lr)

    @property
    def validation_loss(self) -> float | None:
        """Mean per-token loss on train/validation.parquet (done.json), when the run has that split."""
        value = (self.done or {}).get("validation_loss")
        return float(value) if isinstance(value, (int, float)) else None

    @property
    def is_adapter(self) -> bool:
        """Every method but a full fine-tune saves a peft adapter (train.config.ADAPTER_METHODS);
        a merged cell saves what its parents saved."""
        return trained_method(self.method) != "full"

    @property
    def is_merged(self) -> bool:
        return is_merged_method(self.method)

    def recipe(self) -> dict[str, Any] | None:
        """recipe.json of a merged cell (parents, type, weights, density, ...), else None."""
        return read_json_or_none(self.path / RECIPE) if self.is_merged else None

    @property
    def log_path(self) -> Path:
        return self.path / LOG

    def log(self) -> list[dict]:
        return read_jsonl(self.log_path)

    def weights_dir(self, stage: str) -> Path | None:
        """early/ or final/ of a done cell, or None when the cell kept no weights for it."""
        if stage not in (EARLY, FINAL):
            raise ValueError(f"stage must be 'early' or 'final', got {stage!r}")
        if self.done is None:
            return None
        name = (self.done.get("weights") or {}).get(stage)
        return self.path / name if name else None

    @property
    def base_model(self) -> str | None:
        return self._recorded("base_model")

    @property
    def base_model_path(self) -> str | None:
        return self._recorded("base_model_path")

    def _recorded(self, key: str) -> str | None:
        for source in (self.done, self.cell):
            if source and source.get(key):
                return source[key]
        return None

    @classmethod
    def from_dir(cls, run_dir: "RunDir | str | Path", method: str, size: int, seed: int,
                 lr: float | None = None) -> "CellInfo":
        run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
        path = run_dir.cell(method, size, seed, lr)
        done = read_json_or_none(path / DONE)
        failed = read_json_or_none(path / FAILED) if done is None else None
        status = cell_status(path)
        damage = damaged_done_marker(path)
        if damage:  # a done.json that does not parse is not done: show it as failed, with the repair
            done, failed, status = None, {"error": f"{damage}; {cell_repair_hint(path)}"}, "failed"
        return cls(method, size, seed, path, status, done, failed, read_json_or_none(path / CELL), lr)


def list_cells(run_dir: "RunDir | str | Path") -> list[CellInfo]:
    """Every cell of train/plan.json with its status (empty before the sweep planned), then the
    merged cells on disk."""
    run_dir = run_dir if isinstance(run_dir, RunDir) else RunDir(run_dir)
    if not run_dir.plan.exists():
        return []
    plan = read_json(run_dir.plan)
    cells = [CellInfo.from_dir(run_dir, c["method"], int(c["size"]), int(c["seed"]), plan_lr(c))
             for c in plan["cells"]]
    merged = [CellInfo.from_dir(run_dir, *key) for key, _ in run_dir.cell_folders() if is_merged_method(key[0])]
    return cells + merged


def is_merged_method(method: str) -> bool:
    """Whether a method name is a merged cell's (``<parent method>+<merge>``)."""
    return MERGE_SEPARATOR in method


def trained_method(method: str) -> str:
    """The training method behind a cell's weights: the method itself, or a merged cell's parents' method."""
    return method.split(MERGE_SEPARATOR, 1)[0]


def plan_lr(cell: dict[str, Any]) -> float | None:
    """The learning rate of a train/plan.json cell entry (absent in plans without a grid)."""
    lr = cell.get("lr")
    return float(lr) if lr is not None else None


def plan_cell_keys(plan: dict[str, Any]) -> list[str]:
    """The keys of the cells a train/plan.json (already read) lists, in its order."""
    return [cell_key(c["method"], c["size"], c["seed"], plan_lr(c)) for c in plan.get("cells") or []]


def not_planned_folders(run_dir: "RunDir", planned: list[str] | set[str]) -> list[str]:
    """Keys of cell folders on disk that the plan (``planned`` keys) no longer lists: an earlier
    grid's rates or sizes. Merged cells are never in a plan, so they do not count; with no
    planned keys (no plan yet) there is nothing to compare with and the list is empty."""
    if not planned:
        return []
    planned = set(planned)
    return [cell_key(*key) for key, _ in run_dir.cell_folders()
            if cell_key(*key) not in planned and not is_merged_method(key.method)]


# ----------------------------------------------------------------------------- tolerant readers


def read_json_or_none(path: str | os.PathLike) -> Any:
    """A run file that may be missing or damaged: its content, or None."""
    try:
        return read_json(path)
    except (OSError, ValueError):  # missing, unreadable, not JSON (json.JSONDecodeError, UnicodeDecodeError)
        return None


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Lines of a JSONL log the run appends to; a partial last line of a killed writer and any
    line that is not a JSON object are skipped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict):
            out.append(row)
    return out
