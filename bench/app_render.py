"""App responsiveness: page render time for a 16-cell and a 108-cell run, side by side.

Run from the repository root::

    nice python bench/app_render.py --rounds 3

Both runs are synthetic (curatune.testing.fixture_run), written once into a temp folder.
Each page is rendered with streamlit's AppTest (the same script run a browser triggers,
minus the network): "cold" = first render after clearing st.cache_data (every file read),
"warm" = a rerun with the cache filled (what each widget click costs). Sizes interleave
round by round and the median is kept, because the machine is shared. Also times
`curatune app` from launch until the server answers its health check.
Writes bench/results/app_render.json and .md.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MAIN = ROOT / "curatune" / "app" / "main.py"
PAGES = ("runs", "curation", "saturation", "learning", "samples")
RUNS = {
    "16 cells": dict(methods=("lora", "full"), sizes=(50, 100, 200, 400), seeds=(0, 1)),
    "108 cells": dict(methods=("lora", "qlora", "full"), seeds=(0, 1, 2),
                      sizes=(25, 50, 75, 100, 150, 200, 300, 400, 600, 800, 1200, 1600)),
}


def render_times(run_dir: Path) -> dict[str, dict[str, float]]:
    import streamlit as st
    from streamlit.testing.v1 import AppTest

    os.environ["CURATUNE_APP_RUNS"] = json.dumps([str(run_dir)])
    out = {}
    for page in PAGES:
        at = AppTest.from_file(str(MAIN), default_timeout=120).run()
        at.switch_page(f"views/{page}.py")
        st.cache_data.clear()
        start = time.perf_counter()
        at.run()
        cold = time.perf_counter() - start
        start = time.perf_counter()
        at.run()
        warm = time.perf_counter() - start
        assert not at.exception and not at.error, (page, [e.value for e in at.exception], [e.value for e in at.error])
        out[page] = {"cold": cold, "warm": warm}
    return out


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def startup_seconds(run_dir: Path) -> float:
    port = free_port()
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "curatune.cli", "app", str(run_dir), "--port", str(port)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=1):
                    return time.perf_counter() - start
            except OSError:
                if process.poll() is not None:
                    raise RuntimeError(f"curatune app exited with {process.returncode}")
                if time.perf_counter() - start > 60:
                    raise RuntimeError("app did not start within 60 s")
                time.sleep(0.05)
    finally:
        process.terminate()
        process.wait(timeout=15)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from curatune.testing.fixture_run import build_fixture_run

    with tempfile.TemporaryDirectory(prefix="curatune-bench-app-") as tmp:
        dirs = {}
        for name, grid in RUNS.items():
            dirs[name] = build_fixture_run(Path(tmp) / name.replace(" ", "-"), n_items=40, n_bootstrap=20, **grid).root
        samples: dict[str, dict[str, dict[str, list[float]]]] = {
            name: {p: {"cold": [], "warm": []} for p in PAGES} for name in RUNS}
        starts: list[float] = []
        for _ in range(args.rounds):
            for name in RUNS:
                for page, t in render_times(dirs[name]).items():
                    for kind in ("cold", "warm"):
                        samples[name][page][kind].append(t[kind])
            starts.append(startup_seconds(dirs["108 cells"]))
    med = {name: {p: {k: statistics.median(v) for k, v in kinds.items()} for p, kinds in pages.items()}
           for name, pages in samples.items()}
    result = {
        "rounds": args.rounds, "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "load_avg": os.getloadavg(), "median_seconds": med, "startup_seconds_median": statistics.median(starts),
    }
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "app_render.json").write_text(json.dumps(result, indent=2) + "\n")
    small, big = RUNS
    lines = [
        "# App render time: 16 vs 108 sweep cells",
        "",
        f"`nice python bench/app_render.py --rounds {args.rounds}` on {result['machine']} "
        f"(load average {result['load_avg'][0]:.1f}, shared machine); medians in seconds.",
        "Cold = first render with an empty cache (all files read); warm = rerun after a widget change.",
        "",
        f"| page | cold, {small} | cold, {big} | ratio | warm, {small} | warm, {big} | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for page in PAGES:
        a, b = med[small][page], med[big][page]
        lines.append(f"| {page} | {a['cold']:.2f} | {b['cold']:.2f} | {b['cold'] / a['cold']:.1f}x | "
                     f"{a['warm']:.2f} | {b['warm']:.2f} | {b['warm'] / a['warm']:.1f}x |")
    lines += ["", f"`curatune app` launch to first health-check answer: {result['startup_seconds_median']:.1f} s "
                  "(median)."]
    (out / "app_render.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
