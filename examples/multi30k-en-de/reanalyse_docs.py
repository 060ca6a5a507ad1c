"""Re-run the analysis on the study's published scores after the analysis changed.

    python examples/multi30k-en-de/reanalyse_docs.py docs/study-multi30k

The study's run directory (with eval/samples, the per-item scores) is not in the repository,
only its long-form scores.parquet. So this re-analyses those scores with the settings recorded
in analysis.json, writes analysis.json anew, and replaces the saturation table of report.txt
(rendered as `curatune report` renders it). Without per-item samples the item bootstrap
cannot run: with one seed per cell the intervals come from the fit's residuals alone (see
docs/analysis.md, "Bootstrap bands"). ``worse_than_base_confident`` needs the item bootstrap
too, so it is carried over from the published analysis.json, which the run's samples produced
(that part of the analysis did not change).
"""
from __future__ import annotations

import io
import shutil
import sys
import tempfile
from pathlib import Path

from rich.console import Console

from curatune.evaluate.analysis import AnalysisConfig, analyze_run
from curatune.evaluate.report import _render_saturation
from curatune.rundir import RunDir, atomic_write_json, atomic_write_text, read_json

SECTION_START = "Saturation (fit over sizes, final checkpoint)"
SECTION_END = "Early checkpoint vs final"


def main(docs: Path) -> None:
    old = read_json(docs / "analysis.json")
    settings = {k: v for k, v in old["config"].items() if k in AnalysisConfig.model_fields}
    config = AnalysisConfig(**settings)
    with tempfile.TemporaryDirectory() as tmp:
        run = RunDir(Path(tmp))
        run.scores.parent.mkdir(parents=True)
        shutil.copyfile(docs / "scores.parquet", run.scores)
        analysis = analyze_run(run, config, write=False)
    confident = {(r["method"], r["suite"], r["metric"]): r["worse_than_base_confident"] for r in old["saturation"]}
    for row in analysis["saturation"]:
        row["worse_than_base_confident"] = confident.get((row["method"], row["suite"], row["metric"]), [])
    analysis["warnings"].append(
        "re-analysed from scores.parquet without the run's eval/samples: saturation intervals come from the "
        "fit residuals (one seed per cell); worse_than_base_confident is carried over from the analysis with samples"
    )
    atomic_write_json(docs / "analysis.json", analysis)
    buffer = io.StringIO()
    _render_saturation(analysis, Console(file=buffer, width=200, color_system=None, force_terminal=False))
    report = (docs / "report.txt").read_text()
    start = report.index(SECTION_START)
    end = report.index(SECTION_END)
    # Keep the blank line the report prints before each section.
    atomic_write_text(docs / "report.txt", report[:start] + buffer.getvalue().lstrip("\n") + "\n" + report[end:])
    for row in analysis["saturation"]:
        if row["suite"] == "task" or row["saturation_verdict"] not in (None, "not reached"):
            print(f"{row['method']:5s} {row['suite']}/{row['metric']:14s} {row['model'] or '—':13s} "
                  f"{row['bootstrap']:10s} {row['saturation_text']}")
    print(f"wrote {docs}/analysis.json and the saturation table of {docs}/report.txt")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    main(Path(sys.argv[1]))
