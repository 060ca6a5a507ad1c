"""Helpers for the hostile-input tests: run the real CLI entry point in-process and check
that it ended cleanly (status 2, one message, no traceback)."""
from __future__ import annotations

import contextlib
import json
import resource
import signal
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from curatune import cli
from curatune.records import with_ledger_defaults

#: A fast curation for tests that only care about loading and writing: exact dedup only.
FAST_CURATE = ["--set", "curate.steps=[{name: exact}]", "--set", "curate.workers=1", "-q"]


@contextlib.contextmanager
def file_size_limit(max_bytes: int):
    """Writes past ``max_bytes`` fail with EFBIG, as a full disk fails them with ENOSPC: a real
    kernel error inside any writer (safetensors' Rust code included), which a test cannot get
    from a full disk without mounting one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    previous = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, previous)


@dataclass
class CliResult:
    code: int
    out: str
    err: str


def run_cli(args: list[str], capsys) -> CliResult:
    """``curatune ARGS`` through :func:`curatune.cli.main` (its error handling included)."""
    argv = sys.argv
    sys.argv = ["curatune", *[str(a) for a in args]]
    try:
        cli.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        sys.argv = argv
    captured = capsys.readouterr()
    return CliResult(code, captured.out, captured.err)


def assert_clean_error(result: CliResult, *names: str) -> str:
    """Status 2, one 'error:' message naming each of ``names``, no traceback; returns the message."""
    assert result.code == 2, (result.code, result.out, result.err)
    assert "Traceback" not in result.err + result.out
    assert result.err.count("error:") == 1, result.err
    message = " ".join(result.err.split())  # rich wraps long lines
    for name in names:
        assert " ".join(str(name).split()) in message, (name, message)
    return message


def write_jsonl(path: Path, rows: list, extra_lines: list[str] = ()) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [json.dumps(r) for r in rows] + list(extra_lines)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def good_rows(n: int, tag: str) -> list[dict]:
    return [{"prompt": f"{tag} question number {i} about a distinct topic", "completion": f"{tag} answer {i}"}
            for i in range(n)]


def assert_accounting(run_dir: Path) -> dict:
    """records in = kept + dropped (trimmed records are among the kept; their cut turns are ledger
    rows with action "trim"), and turns in = kept + removed, in the report and in the parquet files."""
    report = json.loads((run_dir / "curate" / "report.json").read_text())
    kept = pd.read_parquet(run_dir / "curate" / "kept.parquet")
    removed = with_ledger_defaults(pd.read_parquet(run_dir / "curate" / "removed.parquet"))
    assert report["input_records"] == report["kept"] + report["removed"]
    assert len(kept) == report["kept"] and (removed["action"] == "drop").sum() == report["removed"]
    assert (removed["action"] == "trim").sum() == report.get("trimmed_records", 0)
    assert report["turns_in"] == report["turns_kept"] + report["turns_removed"]
    assert removed["reason"].notna().all()
    return report
