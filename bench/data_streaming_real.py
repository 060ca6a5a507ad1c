"""The streaming readers against the whole-file readers on every real JSON array and TSV in
../shared/data: the same rows (position, parsed value, error), encoding and warnings.

    nice python bench/data_streaming_real.py     # writes bench/results/data_streaming_real.md and .json

Reads the files where they are (never copied). The whole-file readers (decode_text +
JsonDocumentReader / parse_csv) are what curatune used for .json/.csv/.tsv before streaming.
"""
from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from test_data_streaming import as_tuples, streamed_read, whole_file_read  # noqa: E402

from curatune.errors import DataError  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
RESULTS = ROOT / "bench" / "results"


def _shown(error: str) -> str:
    """The message without the file name, a tab written as \\t (it would split a table cell)."""
    return error.split(": ", 1)[1].replace("\t", "\\t")


def outcome(reader, path: Path) -> dict:
    """What a reader makes of a file: its rows, encoding and warnings, or its one error."""
    try:
        rows, encoding, warnings = reader(path)
    except DataError as exc:
        return {"error": str(exc)}
    return {"rows": len(rows), "row_tuples": as_tuples(rows), "encoding": encoding, "warnings": warnings}


def main() -> None:
    if not SHARED.exists():
        sys.exit(f"needs {SHARED}")
    files = sorted(SHARED.glob("instruct/**/*.json")) + sorted(SHARED.glob("mt/**/*.tsv"))
    rows_out = []
    for path in files:
        started = time.perf_counter()
        streamed = outcome(streamed_read, path)
        seconds = time.perf_counter() - started
        whole = outcome(whole_file_read, path)
        rows_out.append({"file": str(path.relative_to(SHARED)), "rows": streamed.get("rows"),
                         "encoding": streamed.get("encoding"), "error": streamed.get("error"),
                         "identical": streamed == whole, "stream_seconds": round(seconds, 2)})
        print(rows_out[-1], flush=True)
    result = {"load_average": [round(x, 2) for x in os.getloadavg()], "files": rows_out,
              "all_identical": all(r["identical"] for r in rows_out)}
    (RESULTS / "data_streaming_real.json").write_text(json.dumps(result, indent=2) + "\n")
    lines = ["# Streaming readers = whole-file readers on the real JSON arrays and TSVs of ../shared/data", "",
             f"Script: `bench/data_streaming_real.py`; load average {result['load_average']}. "
             "Identical = same rows (position, parsed value, raw text, error), encoding and warnings, "
             "or the same error message for a file that cannot be read.", "",
             "| file | rows | encoding | identical | streamed in s |", "|---|---:|---|---|---:|"]
    lines += [f"| {r['file']} | {r['rows'] if r['error'] is None else 'error: ' + _shown(r['error'])} | "
              f"{r['encoding'] or '-'} | {'yes' if r['identical'] else 'NO'} | {r['stream_seconds']} |"
              for r in rows_out]
    (RESULTS / "data_streaming_real.md").write_text("\n".join(lines) + "\n")
    if not result["all_identical"]:
        sys.exit("streaming and whole-file readers differ")


if __name__ == "__main__":
    main()
