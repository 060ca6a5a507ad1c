"""Peak memory of curation on the 55k self_instruct records: records per GB, beside the
cost of holding the same rows in a pandas DataFrame (the reference).

    nice python bench/curate_memory.py              # every phase, each in a fresh process
    nice python bench/curate_memory.py --profile    # also the biggest allocations (tracemalloc)

Each phase runs in its own child process so that its peak RSS (``ru_maxrss``) is its own:

* ``imports``: python + curatune, pandas, pyarrow imported (the floor every phase pays);
* ``pandas``: ``pd.read_json(lines=True)`` of every file, concatenated (the reference: the
  rows as a DataFrame, no records, no ledger);
* ``load``: ``load_sources`` (records + rejection ledger);
* ``curate``: ``run_curate`` with the pipeline ``curatune curate --input`` runs by default
  (exact, quality, language, near_dup, decontaminate), writing the run directory.

Records per GB = records / (peak RSS - imports floor). Writes bench/results/curate_memory.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SI = ROOT.parent / "shared/data/instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template"
RESULTS = ROOT / "bench" / "results"
PHASES = ("imports", "pandas", "load", "curate")


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def run_phase(phase: str, profile: bool) -> dict:
    """Body of one child process."""
    import pandas as pd  # noqa: F401 - part of the floor
    import pyarrow  # noqa: F401

    from curatune.config import validate_config
    from curatune.curate.stage import run_curate
    from curatune.data.loaders import load_sources
    from curatune.rundir import RunDir

    if profile:
        import tracemalloc

        tracemalloc.start(8)
    started = time.perf_counter()
    files = sorted(SI.glob("*.jsonl"))
    result: dict = {"phase": phase}
    if phase == "pandas":
        frame = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
        result["rows"] = len(frame)
    elif phase == "load":
        loaded = load_sources([{"path": str(SI), "category": "{file}"}])
        result["rows"] = loaded.input_count
        result["records"] = len(loaded.records)
        result["text_mib"] = sum(len(r.prompt.encode()) + len(r.response.encode()) for r in loaded.records) / 2**20
    elif phase == "curate":
        out = Path(tempfile.mkdtemp(prefix="curate-memory-"))
        config = validate_config({
            "run_dir": str(out), "data": {"sources": [{"path": str(SI), "category": "{file}"}]},
            "curate": {"workers": 2, "progress": False},
        })
        report = run_curate(config, RunDir(out), progress=False)
        result["rows"] = report["input_records"]
        result["kept"] = report["kept"]
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mib"] = round(_peak_mib(), 1)
    if profile and phase != "imports":
        import tracemalloc

        snapshot = tracemalloc.take_snapshot()
        result["traced_peak_mib"] = round(tracemalloc.get_traced_memory()[1] / 2**20, 1)
        result["top_allocations"] = [
            {"where": str(stat.traceback[0]), "mib": round(stat.size / 2**20, 1)}
            for stat in snapshot.statistics("lineno")[:15]
        ]
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--label", default="current", help="Name of this measurement in the results file.")
    parser.add_argument("--code", default=str(ROOT), help="Checkout whose curatune the phases import "
                        "(e.g. an older commit unpacked with git archive, to measure before/after).")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.profile)))
        return
    if not SI.exists():
        sys.exit(f"needs {SI}")
    load_before = os.getloadavg()
    phases = {}
    for phase in PHASES:
        cmd = [sys.executable, __file__, "--phase", phase] + (["--profile"] if args.profile else [])
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=args.code)
        out = subprocess.run(cmd, capture_output=True, text=True, env=env, check=True)
        phases[phase] = json.loads(out.stdout.strip().splitlines()[-1])
        print(phase, {k: v for k, v in phases[phase].items() if k != "top_allocations"}, flush=True)
    floor = phases["imports"]["peak_rss_mib"]
    rows = phases["load"]["rows"]
    summary = {
        phase: {
            "peak_rss_mib": phases[phase]["peak_rss_mib"],
            "above_floor_mib": round(phases[phase]["peak_rss_mib"] - floor, 1),
            "records_per_gb": round(rows / max(phases[phase]["peak_rss_mib"] - floor, 1e-9) * 1024)
            if phase != "imports" else None,
        }
        for phase in PHASES
    }
    result = {
        "label": args.label, "code": _commit(args.code), "records": rows, "text_mib": round(phases["load"]["text_mib"], 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
        "phases": phases, "summary": summary,
        "ratio_load_to_pandas": round(summary["load"]["above_floor_mib"] / summary["pandas"]["above_floor_mib"], 2),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "curate_memory.json"
    history = json.loads(path.read_text()) if path.exists() else {}
    history[args.label] = result
    path.write_text(json.dumps(history, indent=2) + "\n")
    write_markdown(history)


def _commit(code: str) -> str:
    out = subprocess.run(["git", "-C", code, "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    return out.stdout.strip() if out.returncode == 0 else code


def write_markdown(history: dict) -> None:
    lines = [
        "# Peak memory of curation: 55,185 self_instruct records (t0_train_50k)",
        "",
        "Each phase in a fresh process; peak RSS from `getrusage` (`ru_maxrss`); the floor is python with",
        "curatune, pandas and pyarrow imported. Records per GB = records / (peak - floor). Reference:",
        "`pd.read_json(lines=True)` of the same files. Script: `bench/curate_memory.py`.",
        "",
    ]
    for label, result in history.items():
        lines += [
            f"## {label}",
            "",
            f"code {result.get('code', '?')}; {result['records']:,} records, {result['text_mib']} MiB of prompt + response text (UTF-8); "
            f"load average {result['load_average_before']} -> {result['load_average_after']} (shared 2-core machine).",
            "",
            "| phase | peak RSS MiB | above floor MiB | records per GB | seconds |",
            "|---|---:|---:|---:|---:|",
        ]
        for phase, row in result["summary"].items():
            per_gb = "-" if row["records_per_gb"] is None else f"{row['records_per_gb']:,}"
            lines.append(f"| {phase} | {row['peak_rss_mib']} | {row['above_floor_mib']} | {per_gb} | "
                         f"{result['phases'][phase]['seconds']} |")
        lines += ["", f"load / pandas (above floor): {result['ratio_load_to_pandas']}x", ""]
    (RESULTS / "curate_memory.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
