"""Which interval width should a saturation point need before it is printed as a number?

    python bench/saturation_point_cuts.py            # reads bench/results/saturation_point_cuts.json

The input is the per-curve output of bench/saturation_synthetic.py (the truth, the fitted point
and the unrounded interval of each of 2,200 curves: five families at noise sd 0, 0.5, 1 and 2,
two-phase curves at 0 and 2; regenerate with the commands in the file's "what"). For each
candidate cut it counts the curves that would get a printed point (rounded as curatune prints
it) and how many of those lie within 10 % of the truth, per setting and over the noisy settings
(sd 0.5 and 1), the issue-14 target being 90 %. Writes bench/results/saturation_point_cuts.md.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from curatune.evaluate.analysis.verdict import POINT_MAX_RATIO, figures, round_size

RESULTS = Path(__file__).resolve().parent / "results"
SMALLEST = 100


def ratio(limit: float):
    return lambda p, lo, hi: hi / max(lo, 1e-9) <= limit


def symmetric(error: float):
    return lambda p, lo, hi: lo >= p / (1 + error) and hi <= p / (1 - error)


CUTS = {f"hi/lo <= {r}" + (" (current)" if r == POINT_MAX_RATIO else ""): ratio(r) for r in (1.25, 1.2, 1.15, 1.1)}
NOISY = ("@0.5", "@1")
CUTS |= {f"every size within {int(100 * e)} % of the point": symmetric(e) for e in (0.10, 0.15)}


def printed(point: float, lo: float, hi: float) -> int:
    """The point as the verdict prints it (verdict.decide's rounding)."""
    if point <= SMALLEST:
        return SMALLEST
    return max(round_size(point, figures(point, lo, hi)), SMALLEST)


def share(part: int, whole: int) -> str:
    return f"{part / whole:.0%}" if whole else "—"


def main() -> None:
    data = json.loads((RESULTS / "saturation_point_cuts.json").read_text())
    settings = data["settings"]
    lines = ["# Printing a saturation point: which interval width (bench/saturation_point_cuts.py)", "",
             f"Input: {data['what']}; code {data['code']}. A curve gets a point when its interval passes the cut "
             "(or ends at the smallest size); 'within 10 %' compares the printed (rounded) point with the truth.", "",
             "| cut | points at sd 0.5-1 | within 10 % | all points | within 10 % | " + " | ".join(settings) + " |",
             "|---|---:|---:|---:|---:|" + "---|" * len(settings)]
    for name, cut in CUTS.items():
        total = within = noisy_total = noisy_within = 0
        cells = []
        for key, curves in settings.items():
            n = w = 0
            for truth, point, lo, hi in curves["curves"]:
                if point is None or lo is None or hi is None or not math.isfinite(truth):
                    continue
                if hi <= SMALLEST or cut(point, lo, hi):
                    n += 1
                    w += abs(printed(point, lo, hi) - truth) / truth <= 0.10
            cells.append(f"{w}/{n}")
            total, within = total + n, within + w
            if key.endswith(NOISY):
                noisy_total, noisy_within = noisy_total + n, noisy_within + w
        lines.append(f"| {name} | {noisy_total} | {noisy_within} ({share(noisy_within, noisy_total)}) | {total} | "
                     f"{within} ({share(within, total)}) | " + " | ".join(cells) + " |")
    text = "\n".join(lines) + "\n"
    (RESULTS / "saturation_point_cuts.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
