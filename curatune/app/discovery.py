"""Which folders are runs, and what to call them. No Streamlit here: the CLI uses it too."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

from curatune.rundir import RunDir

#: Environment variable through which `curatune app` hands the run folders to the app.
RUNS_ENV = "CURATUNE_APP_RUNS"


@dataclass(frozen=True)
class RunRef:
    path: Path
    label: str


def paths_from_env(environ: dict[str, str] | None = None) -> list[Path]:
    raw = (environ if environ is not None else os.environ).get(RUNS_ENV, "")
    if not raw:
        return []
    try:
        items = json.loads(raw)
    except json.JSONDecodeError:
        items = raw.split(os.pathsep)
    return [Path(p) for p in items if p]


def looks_like_run(path: Path) -> bool:
    """True when any file of the contract is there (a run may be partial)."""
    run = RunDir(path)
    return any(p.exists() for p in (run.manifest, run.curate_report, run.kept, run.plan, run.scores))


def expand_run_paths(paths: Iterable[Path]) -> list[Path]:
    """Run folders among ``paths``: a run itself, or a folder whose subfolders are runs.

    A folder that is neither stays in the list, so the app can say what it lacks.
    """
    found: list[Path] = []
    for path in paths:
        path = Path(path).expanduser().resolve()
        if path.is_dir() and not looks_like_run(path):
            children = sorted(c for c in path.iterdir() if c.is_dir() and looks_like_run(c))
            if children:
                found.extend(children)
                continue
        found.append(path)
    unique: list[Path] = []
    for path in found:
        if path not in unique:
            unique.append(path)
    return unique


def _plain_read(path: Path) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def discover_runs(paths: Iterable[Path], read_manifest: Callable[[Path], Any] = _plain_read) -> list[RunRef]:
    """RunRefs with short, unique labels: the experiment name, else the folder name."""
    expanded = expand_run_paths(paths)
    names = []
    for path in expanded:
        manifest_path = RunDir(path).manifest
        try:
            manifest = read_manifest(manifest_path) if manifest_path.exists() else None
        except Exception:  # a damaged manifest: the pages report it; here only the name is lost
            manifest = None
        name = ((manifest.get("config") or {}).get("name") if isinstance(manifest, dict) else None)
        names.append(str(name) if name else path.name or str(path))
    labels: list[str] = []
    for path, name in zip(expanded, names):
        if names.count(name) > 1:
            name = f"{name} ({path.name})" if path.name != name else f"{name} ({path.parent.name}/{path.name})"
        if name in labels:
            name = str(path)
        labels.append(name)
    return [RunRef(path, label) for path, label in zip(expanded, labels)]
