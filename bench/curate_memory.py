"""Peak memory of loading and curation, before and after a change, side by side in one run.

    nice python bench/curate_memory.py --before d1caaf9     # the commit to compare with

The "before" code is that commit unpacked with ``git archive``; "after" is this checkout.
Correctness first: both codes curate the demo data (before any measurement) and the 55,185
self_instruct records (the ``curate`` phase, before any result is written) with the pipeline
``curatune curate --input`` runs by default; their kept.parquet and removed.parquet must be
byte-identical and their report.json equal except for timings and the fingerprint (which
hashes the run directory's path); the script stops if not. Each phase in its own child process so that its peak RSS (``ru_maxrss``) is
its own:

* ``imports``: python + curatune, pandas, pyarrow imported (the floor every phase pays);
* ``pandas``: ``pd.read_json(lines=True)`` of every file, concatenated (the reference: the
  rows as a DataFrame, no records, no ledger);
* ``load``: ``load_sources`` of the 294 JSONL files (records + rejection ledger);
* ``curate``: ``run_curate`` (workers=2; the worker processes are not counted);
* ``load_json`` / ``load_csv_gz``: ``load_sources`` of the same rows written as one JSON
  array (.json) and as one gzip-compressed CSV (built in a temp folder, not kept).

Records per GB = records / (peak RSS - imports floor of the same code). Writes
bench/results/curate_memory.json and .md.
"""
from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SI = ROOT.parent / "shared/data/instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template"
RESULTS = ROOT / "bench" / "results"
PHASES = ("imports", "pandas", "load", "curate", "load_json", "load_csv_gz")
#: Report keys that differ between any two runs (timings; the fingerprint hashes the run_dir path).
VOLATILE = {"seconds", "records_per_second", "fingerprint"}


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def curate_into(source: str, out: Path) -> dict:
    from curatune.config import validate_config
    from curatune.curate.stage import run_curate
    from curatune.rundir import RunDir

    config = validate_config({
        "run_dir": str(out), "data": {"sources": [{"path": source, "category": "{file}"}]},
        "curate": {"workers": 2, "progress": False},
    })
    return run_curate(config, RunDir(out), progress=False)


def run_phase(phase: str, data_dir: str, out: str | None) -> dict:
    """Body of one child process."""
    import pandas as pd
    import pyarrow  # noqa: F401 - part of the floor

    import curatune.curate.stage  # noqa: F401 - part of the floor
    from curatune.data.loaders import load_sources

    started = time.perf_counter()
    files = sorted(SI.glob("*.jsonl"))
    result: dict = {"phase": phase}
    if phase == "pandas":
        frame = pd.concat([pd.read_json(f, lines=True) for f in files], ignore_index=True)
        result["rows"] = len(frame)
    elif phase in ("load", "load_json", "load_csv_gz"):
        path = {"load": str(SI), "load_json": f"{data_dir}/all.json", "load_csv_gz": f"{data_dir}/all.csv.gz"}[phase]
        loaded = load_sources([{"path": path, "category": "{file}"}])
        result["rows"] = loaded.input_count
        result["records"] = len(loaded.records)
    elif phase == "curate":
        report = curate_into(str(SI), Path(out))
        result["rows"] = report["input_records"]
        result["kept"] = report["kept"]
    result["seconds"] = round(time.perf_counter() - started, 1)
    result["peak_rss_mib"] = round(_peak_mib(), 1)
    return result


def child(code: Path, *args: str) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(code))
    out = subprocess.run([sys.executable, __file__, *args], capture_output=True, text=True, env=env)
    if out.returncode != 0:
        sys.exit(f"{' '.join(args)} with {code} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------- correctness


def same_outputs(before: Path, after: Path) -> dict:
    """Byte-identical parquet files and equal reports (but for VOLATILE keys), or exit."""
    verdict = {}
    for name in ("kept.parquet", "removed.parquet"):
        a, b = (before / "curate" / name).read_bytes(), (after / "curate" / name).read_bytes()
        verdict[name] = {"bytes": len(a), "identical": a == b}
    reports = [_stable(json.loads((d / "curate" / "report.json").read_text())) for d in (before, after)]
    verdict["report.json"] = {"equal_but_timings": reports[0] == reports[1]}
    if not all(v.get("identical", v.get("equal_but_timings")) for v in verdict.values()):
        sys.exit(f"outputs differ between before and after: {verdict}")
    return verdict


def _stable(value):
    if isinstance(value, dict):
        return {k: _stable(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [_stable(v) for v in value]
    return value


def check_outputs(before_code: Path, work: Path) -> dict:
    """Both codes curate the demo data and self_instruct; compare what they write."""
    demo = work / "demo"
    child(ROOT, "--make-demo", str(demo))
    checks = {}
    for name, source in (("demo (train.jsonl, 1,200 rows)", str(demo / "train.jsonl")),):
        runs = {}
        for label, code in (("before", before_code), ("after", ROOT)):
            runs[label] = work / f"run-{label}"
            shutil.rmtree(runs[label], ignore_errors=True)
            child(code, "--curate", source, str(runs[label]))
        checks[name] = same_outputs(runs["before"], runs["after"])
        print("outputs identical:", name, checks[name], flush=True)
    return checks


# ----------------------------------------------------------------------------- inputs for the streaming phases


def write_single_files(data_dir: Path) -> dict:
    """The self_instruct rows as one JSON array and one gzip CSV (prompt, completion, category)."""
    rows = []
    for f in sorted(SI.glob("*.jsonl")):
        for line in f.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                rows.append({"prompt": row["prompt"], "completion": row["completion"], "category": f.stem})
    (data_dir / "all.json").write_text(json.dumps(rows, ensure_ascii=False, indent=1), encoding="utf-8")
    with gzip.open(data_dir / "all.csv.gz", "wt", encoding="utf-8", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=["prompt", "completion", "category"])
        writer.writeheader()
        writer.writerows(rows)
    return {"rows": len(rows), "json_mib": round((data_dir / "all.json").stat().st_size / 2**20, 1),
            "csv_gz_mib": round((data_dir / "all.csv.gz").stat().st_size / 2**20, 1)}


def unpack(commit: str, into: Path) -> Path:
    into.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", commit], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


# ----------------------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--phase", choices=PHASES, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    parser.add_argument("--curate", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--make-demo", help=argparse.SUPPRESS)
    parser.add_argument("--make-files", help=argparse.SUPPRESS)
    parser.add_argument("--before", required=False, help="Commit to compare with (default: the merge base with main).")
    args = parser.parse_args()
    if args.phase:
        print(json.dumps(run_phase(args.phase, args.data_dir, args.out)))
        return
    if args.curate:
        print(json.dumps({"kept": curate_into(args.curate[0], Path(args.curate[1]))["kept"]}))
        return
    if args.make_files:
        print(json.dumps(write_single_files(Path(args.make_files))))
        return
    if args.make_demo:
        from curatune.data.demo import generate_demo_dataset

        generate_demo_dataset(Path(args.make_demo), n_train=1200, n_heldout=100, seed=0)
        print(json.dumps({}))
        return
    if not SI.exists():
        sys.exit(f"needs {SI}")
    before = args.before or _git("merge-base", "HEAD", "main")
    work = Path(tempfile.mkdtemp(prefix="curate-memory-"))
    try:
        before_code = unpack(before, work / "before-code")
        codes = {"before": (before_code, _git("rev-parse", "--short", before)),
                 "after": (ROOT, _git("rev-parse", "--short", "HEAD") + ("+changes" if _dirty() else ""))}
        load_before = os.getloadavg()
        checks = check_outputs(before_code, work)
        inputs = child(ROOT, "--make-files", str(work))  # in a child: the parent stays small (its RSS is inherited)
        phases: dict = {label: {} for label in codes}
        for phase in PHASES:
            for label, (code, _) in codes.items():
                out = work / f"phase-run-{label}"
                phases[label][phase] = child(code, "--phase", phase, "--data-dir", str(work), "--out", str(out))
                print(label, phases[label][phase], flush=True)
            if phase == "curate":  # the curate phase's outputs are the self_instruct correctness check
                checks["self_instruct (55,185 rows)"] = same_outputs(work / "phase-run-before", work / "phase-run-after")
                print("outputs identical: self_instruct", checks["self_instruct (55,185 rows)"], flush=True)
        result = {
            "codes": {label: commit for label, (_, commit) in codes.items()},
            "records": phases["after"]["load"]["rows"], "inputs": inputs, "outputs_identical": checks,
            "load_average_before": [round(x, 2) for x in load_before],
            "load_average_after": [round(x, 2) for x in os.getloadavg()],
            "phases": phases, "summary": summarize(phases),
        }
    finally:
        shutil.rmtree(work, ignore_errors=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "curate_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    write_markdown(result)


def summarize(phases: dict) -> dict:
    summary = {}
    for phase in PHASES:
        row = {}
        for label, measured in phases.items():
            floor = measured["imports"]["peak_rss_mib"]
            above = round(measured[phase]["peak_rss_mib"] - floor, 1)
            rows = measured[phase].get("rows")
            row[label] = {"peak_rss_mib": measured[phase]["peak_rss_mib"], "above_floor_mib": above,
                          "records_per_gb": round(rows / max(above, 1e-9) * 1024) if rows else None,
                          "seconds": measured[phase]["seconds"]}
        if row["before"]["records_per_gb"]:
            row["ratio_after_to_before"] = round(row["after"]["records_per_gb"] / row["before"]["records_per_gb"], 2)
        summary[phase] = row
    return summary


def _git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True).stdout.strip()


def _dirty() -> bool:
    return bool(_git("status", "--porcelain", "--untracked-files=no"))


def write_markdown(result: dict) -> None:
    inputs = result["inputs"]
    lines = [
        "# Peak memory of loading and curation: 55,185 self_instruct records (t0_train_50k)",
        "",
        f"Before = {result['codes']['before']}, after = {result['codes']['after']}, measured in one run of "
        "`bench/curate_memory.py`; each phase in a fresh process, peak RSS from `getrusage` (`ru_maxrss`);",
        "the floor is python with curatune, pandas and pyarrow imported. Records per GB = records / (peak - floor).",
        f"Load average {result['load_average_before']} -> {result['load_average_after']} (shared 2-core machine: "
        "seconds are not comparable, memory is).",
        "",
        "Correctness first: kept.parquet and removed.parquet byte-identical, report.json equal but for timings "
        "and the fingerprint:",
        "",
    ]
    for name, check in result["outputs_identical"].items():
        parts = ", ".join(f"{f} {'identical' if v.get('identical') else 'DIFFERENT'} ({v['bytes']:,} bytes)"
                          for f, v in check.items() if "bytes" in v)
        lines.append(f"- {name}: {parts}; report.json "
                     f"{'equal' if check['report.json']['equal_but_timings'] else 'DIFFERENT'}")
    lines += [
        "",
        f"`load_json` / `load_csv_gz`: the same {inputs['rows']:,} rows as one JSON array ({inputs['json_mib']} MiB) "
        f"and one gzip CSV ({inputs['csv_gz_mib']} MiB compressed).",
        "",
        "| phase | before: above floor MiB | after: above floor MiB | before: records per GB | after: records per GB | after / before | seconds before / after |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for phase, row in result["summary"].items():
        b, a = row["before"], row["after"]
        per = (lambda r: "-" if r["records_per_gb"] is None else f"{r['records_per_gb']:,}")
        lines.append(f"| {phase} | {b['above_floor_mib']} | {a['above_floor_mib']} | {per(b)} | {per(a)} | "
                     f"{row.get('ratio_after_to_before', '-')} | {b['seconds']} / {a['seconds']} |")
    lines.append("")
    path = RESULTS / "curate_memory.md"
    notes = path.read_text(encoding="utf-8").partition(NOTES)[2] if path.exists() else ""
    path.write_text("\n".join(lines) + "\n" + NOTES + (notes or "\n"), encoding="utf-8")


#: Hand-written analysis below this heading in the .md survives a re-run.
NOTES = "## Where the memory goes"


if __name__ == "__main__":
    main()
