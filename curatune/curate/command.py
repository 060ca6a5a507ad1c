"""`curatune curate`: curate data into RUN_DIR/curate and print a summary table."""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console
from rich.table import Table

from curatune.config import (
    FORMATS,
    apply_override,
    load_config,
    resolve_relative_paths,
    validate_config,
)
from curatune.curate.stage import run_curate
from curatune.errors import ConfigError
from curatune.rundir import RunDir


def _summary(report: dict[str, Any], console: Console, run_dir: Path) -> None:
    table = Table(title="curation", show_lines=False)
    for column, justify in (("step", "left"), ("in", "right"), ("kept", "right"), ("removed", "right"),
                            ("trimmed", "right"), ("seconds", "right"), ("top reasons", "left")):
        table.add_column(column, justify=justify)
    for step in report["steps"]:
        if step.get("enabled") is False:
            table.add_row(step["name"], str(step["input"]), "-", "-", "-", "-", "skipped (enabled: false)")
            continue
        counts = Counter(step.get("removed_by_reason", {})) + Counter(step.get("trimmed_by_reason", {}))
        reasons = ", ".join(f"{k} {v}" for k, v in counts.most_common(3))
        seconds = "-" if step.get("seconds") is None else f"{step['seconds']:.1f}"
        table.add_row(step["name"], str(step["input"]), str(step["kept"]), str(step["removed"]),
                      str(step.get("trimmed", 0)), seconds, reasons)
    console.print(table)
    for step in report["steps"]:
        _similarity_line(step, console)
    console.print(
        f"[bold]{report['input_records']}[/bold] records in = [bold green]{report['kept']} kept[/bold green]"
        f"{_trimmed_among_kept(report)} + {report['removed']} dropped ({report['seconds']:.1f} s)"
        f"{' [dim](finished earlier; unchanged)[/dim]' if report.get('resumed') else ''}"
    )
    if "turns_in" in report:
        console.print(
            f"[bold]{report['turns_in']}[/bold] turns in = {report['turns_kept']} kept + {report['turns_removed']} removed "
            f"(by drops and by {report.get('trimmed_records', 0)} trims: conversations cut before a failing exchange)"
        )
    detection = report.get("detection")
    if detection:
        det = Table(title="detection vs labels")
        for column in ("flaw", "labeled", "found", "recall", "predicted", "precision"):
            det.add_column(column, justify="left" if column == "flaw" else "right")
        fmt = lambda v: "-" if v is None else f"{v:.3f}"  # noqa: E731
        for flaw, row in detection["flaws"].items():
            det.add_row(flaw, str(row["labeled"]), str(row["found"]), fmt(row["recall"]), str(row["predicted"]), fmt(row["precision"]))
        console.print(det)
    console.print(f"wrote {run_dir / 'curate'}/kept.parquet, removed.parquet, report.json")


def _trimmed_among_kept(report: dict) -> str:
    """Trimmed records are kept (their clean prefix); their cut turns are in the ledger."""
    trimmed = report.get("kept_trimmed") or 0
    return f" ({trimmed} of them trimmed)" if trimmed else ""


def _similarity_line(step: dict[str, Any], console: Console) -> None:
    """near_dup: how close the removed records are to the record kept for them (and any warning)."""
    similarity = step.get("counters", {}).get("similarity_to_kept")
    if not similarity or not similarity.get("removed"):
        return
    bins = ", ".join(f"{k} {v}" for k, v in similarity["bins"].items() if v)
    console.print(
        f"{step['name']}: similarity of removed records to the record kept: min {similarity['min']}, "
        f"median {similarity['median']}; {bins}"
    )
    for warning in step["counters"].get("warnings", []):
        console.print(f"[yellow]warning:[/yellow] {warning}")


def _absolute(path: str) -> str:
    """An --input as an absolute path; abspath, not resolve(): a link that loops must reach the
    loader (which names the problem) instead of failing inside pathlib."""
    return path if path.startswith("hf:") else os.path.abspath(os.path.expanduser(path))


def parse_mapping(text: str | None) -> dict[str, str]:
    """``instruction=question,output=answer`` -> {"instruction": "question", "output": "answer"}."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        key, sep, field = part.partition("=")
        if not sep or not key.strip() or not field.strip():
            raise ConfigError(f"--mapping {text!r}: expected ours=theirs pairs separated by commas, "
                              "e.g. instruction=question,output=answer")
        mapping[key.strip()] = field.strip()
    return mapping


def input_sources(paths: list[str], format_: str, mapping_text: str | None) -> list[dict[str, Any]]:
    """data.sources for ``--input`` paths (absolute, so the written config.yaml re-runs anywhere)."""
    if format_ == "parallel":
        raise ConfigError("--format parallel needs target_path: describe the source in a config file")
    mapping = parse_mapping(mapping_text)
    sources = []
    for p in paths:
        source: dict[str, Any] = {"path": _absolute(p)}
        if format_ != "auto":
            source["format"] = format_
        if mapping:
            source["mapping"] = mapping
        sources.append(source)
    return sources


def register(app: typer.Typer) -> None:
    @app.command("curate")
    def curate(
        config: Optional[Path] = typer.Argument(None, help="Experiment YAML (optional with --input)."),
        input_: list[str] = typer.Option([], "--input", "-i", help="A data file, folder or glob (repeatable); replaces data.sources."),
        out: Optional[Path] = typer.Option(None, "--out", "-o", help="Run directory to write (same as --run-dir)."),
        run_dir: Optional[Path] = typer.Option(None, "--run-dir", help="Run directory (overrides run_dir in the config)."),
        set_: list[str] = typer.Option([], "--set", help="Override a key: key.path=value (repeatable)."),
        labels: Optional[str] = typer.Option(None, "--labels", help="Labels file of planted flaws: report precision/recall."),
        force: bool = typer.Option(False, "--force", help="Recompute even when an identical curation already finished."),
        quiet: bool = typer.Option(False, "--no-progress", "--quiet", "-q", help="No progress bars (for logs), as in sweep and evaluate."),
        format_: str = typer.Option("auto", "--format", "-f", help=f"Format of the --input files: {', '.join(f for f in FORMATS if f != 'parallel')}."),
        mapping: Optional[str] = typer.Option(None, "--mapping", "-m", help="Field mapping of the --input files, e.g. instruction=question,output=answer."),
    ) -> None:
        """Deduplicate, filter, decontaminate and balance the training data (RUN_DIR/curate)."""
        if config is None and not input_:
            raise ConfigError("give a config file or at least one --input PATH (see curatune curate --help)")
        overrides = list(set_)
        if config is not None:
            cfg = load_config(config, overrides)
            raw = cfg.resolved()
        else:
            raw = {}
            for override in overrides:
                apply_override(raw, override)
            # Settings given on the command line are relative to where the command runs.
            resolve_relative_paths(raw, Path.cwd())
        if input_:
            raw.setdefault("data", {})["sources"] = input_sources(input_, format_, mapping)
        elif format_ != "auto" or mapping:
            raise ConfigError("--format and --mapping apply to --input files (set them per source in the config)")
        target = out or run_dir
        if target is not None:
            raw["run_dir"] = os.path.abspath(os.path.expanduser(target))
        elif config is None:
            raise ConfigError("--input needs --out DIR (where to write the run directory)")
        cfg = validate_config(raw, str(config) if config else "command line")
        console = Console(stderr=True)
        report = run_curate(cfg, RunDir(cfg.run_dir), labels, force=force, progress=not quiet and cfg.curate.progress, console=console)
        _summary(report, Console(), Path(cfg.run_dir))
