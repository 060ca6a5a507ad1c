"""Entry point of one cell in its own process(es): ``accelerate launch -m curatune.train.cell_main``.

The sweep starts it for multi-GPU cells (``train.launch``); every rank runs it, rank 0
writes the cell's files. The config is the one the sweep recorded in
``train/sweep_config.json``, so all ranks train with exactly the same settings.
"""
from __future__ import annotations

import argparse
import sys

from curatune.rundir import RunDir
from curatune.train.cell import CellSpec, run_cell
from curatune.train.plan import read_sweep_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--run-dir", required=True)
    parser.add_argument("--method", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--lr", type=float, default=None, help="the cell's rate in a learning-rate grid")
    args = parser.parse_args(argv)
    run_dir = RunDir(args.run_dir)
    config = read_sweep_config(run_dir)
    outcome = run_cell(config, run_dir, CellSpec(args.method, args.size, args.seed, args.lr))
    return 0 if outcome.status in ("done", "skipped") else 1


if __name__ == "__main__":
    sys.exit(main())
