"""What a saturation point and its interval allow a reader to conclude, in words and in
numbers rounded no finer than the interval supports."""
from __future__ import annotations

import math
from dataclasses import dataclass

#: The point is reported as a number only when its interval spans at most this ratio
#: (hi / lo), i.e. about +-5 % around it; a wider interval is a range with the best fit in
#: brackets. Chosen on 2,200 synthetic curves (bench/results/saturation_point_cuts.md): without
#: noise every cut from 1.1 to 1.25 prints nearly the same points (377-380 of 600 curves, all
#: within 10 % of the truth); at noise sd 0.5 and 1 the earlier 1.25 printed 40 points, only 78 %
#: of them within 10 % (a bootstrap interval that comes out narrow by chance, with 3 seeds, is often
#: overconfident), 1.15 printed 7 (6 within), 1.1 printed 2 (both within).
POINT_MAX_RATIO = 1.1

SATURATED = "saturated"
RANGE = "range"
BEYOND = "beyond largest size"
NOT_REACHED = "not reached"
NOT_DETERMINED = "not determined"
VERDICTS = (SATURATED, RANGE, BEYOND, NOT_REACHED, NOT_DETERMINED)


def round_size(value: float, significant: int, direction: str = "nearest") -> int:
    """``value`` to ``significant`` significant figures; "down"/"up" round outward so a
    rounded interval still holds the unrounded one."""
    if value <= 0:
        return int(round(value))
    step = 10 ** (math.floor(math.log10(value)) - significant + 1)
    step = max(step, 1)
    how = {"nearest": round, "down": math.floor, "up": math.ceil}[direction]
    return int(how(value / step) * step)


def figures(point: float | None, lo: float | None, hi: float | None) -> int:
    """Significant figures the interval supports: two, one when it is wider than the point
    itself or open-ended (an open-ended interval's lower end keeps two)."""
    if point is None or lo is None or hi is None or not math.isfinite(hi):
        return 1
    return 1 if hi - lo > point else 2


def fmt(n: int) -> str:
    return f"{n:,}"


@dataclass
class Verdict:
    verdict: str
    text: str
    point: int | None
    lo: int | None
    hi: int | None


def decide(point: float | None, lo: float | None, hi: float | None, *, smallest: float, largest_trained: float,
           search_limit: float, has_interval: bool) -> Verdict:
    """The verdict from the fitted point and its interval (None / inf = not reached within
    ``search_limit``).

    * saturated: the interval is narrow (hi / lo <= POINT_MAX_RATIO): "≈ 1,200 (1,100–1,300)";
    * range: it is bounded but wider: "between 900 and 2,400";
    * beyond largest size: the data put it past the largest trained size and cannot say where;
    * not reached: the fit and at least the interval's lower end lie past the search limit;
    * not determined: the interval runs from within the trained sizes to past the search limit.

    Without an interval (one seed and no samples, or n_bootstrap 0) the point is shown to
    one significant figure and called a range of unknown width, never "saturated".
    """
    limit = fmt(int(round(search_limit)))
    hi_open = hi is None or not math.isfinite(hi)
    lo_open = lo is None or not math.isfinite(lo)
    if not has_interval:
        if point is None:
            return Verdict(NOT_REACHED, f"not reached by {limit} (no interval: one seed and no per-item samples)",
                           None, None, None)
        p = int(smallest) if point <= smallest else max(round_size(point, 1), int(smallest))
        return Verdict(NOT_DETERMINED, f"fit says ≈ {fmt(p)}; no interval (one seed and no per-item samples), "
                       "so not determined", p, None, None)
    if lo_open:  # even the low end of the interval is past the search limit
        return Verdict(NOT_REACHED, f"not reached by {limit}", None, None, None)
    sig = figures(point, lo, None if hi_open else hi)
    lo_r = max(round_size(lo, sig, "down"), int(smallest)) if lo > smallest else int(smallest)
    p_r = None if point is None else int(smallest) if point <= smallest else max(round_size(point, sig), int(smallest))
    if hi_open:
        # The lower end is all there is to read: two figures, so it stays past the largest size.
        lo_r = max(round_size(lo, 2, "down"), int(smallest)) if lo > smallest else int(smallest)
        if lo > largest_trained:
            return Verdict(BEYOND, f"beyond the largest size: not before {fmt(lo_r)}; the data cannot tell "
                           f"where past {fmt(int(largest_trained))}", p_r, lo_r, None)
        return Verdict(NOT_DETERMINED, f"not determined: anywhere from {fmt(lo_r)} to past {limit}", p_r, lo_r, None)
    hi_r = round_size(hi, sig, "up")
    if point is None:  # the fit itself does not reach it, most replicates do
        return Verdict(RANGE, f"between {fmt(lo_r)} and {fmt(hi_r)}", None, lo_r, hi_r)
    if hi <= smallest:
        return Verdict(SATURATED, f"at or before the smallest size ({fmt(int(smallest))})", int(smallest),
                       int(smallest), int(smallest))
    if hi / max(lo, 1e-9) <= POINT_MAX_RATIO:
        return Verdict(SATURATED, f"≈ {fmt(p_r)} ({fmt(lo_r)}–{fmt(hi_r)})", p_r, lo_r, hi_r)
    return Verdict(RANGE, f"between {fmt(lo_r)} and {fmt(hi_r)} (best fit ≈ {fmt(p_r)})", p_r, lo_r, hi_r)
