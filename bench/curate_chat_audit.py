"""Precision of each default curation rule on real data, from hand labels of seeded samples.

    nice python bench/curate_chat_audit.py sharegpt --dump /tmp/sharegpt_sample.txt   # run + print the sample
    nice python bench/curate_chat_audit.py sharegpt                                    # run + score the labels
    nice python bench/curate_chat_audit.py gpteacher

1. Runs the default pipeline (``run_curate`` with no steps configured) on the source and
   times it (the machine is shared: the load average is recorded beside the time).
2. Draws a seeded random sample of up to 25 ledger rows per rule (removed or trimmed; load
   rejections are format errors, not rules, and are left out) and 60 kept records: the rows
   whose sha256(seed:id) is smallest, so a record keeps its place in the sample when the
   rules change around it and its label carries over.
3. ``--dump FILE`` prints the sample for reading: each conversation with the flagged turn
   marked and the flagged span between >>> <<<.
4. With the labels file ``bench/labels/<source>.jsonl`` (one row per sampled record:
   ``{"id", "reason", "verdict": "right"|"wrong", "note"}``, ``id`` = the ledger's original
   record id, reason "kept" for the kept sample) it computes each rule's precision with a
   Wilson 95% interval and the share of kept records that are clean, and writes
   bench/results/curate_chat_audit.md and .json (one section per source).

Labels hold ids and verdicts only, never data text.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import sys
import time
from pathlib import Path

import pandas as pd
from statsmodels.stats.proportion import proportion_confint

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "instruct"
SOURCES = {
    "sharegpt": DATA / "sharegpt_v3" / "sharegpt_v3_even.jsonl.gz",
    "gpteacher": DATA / "gpteacher",
    "codealpaca": DATA / "codealpaca" / "code_alpaca_2k.json",
    "self_instruct": DATA / "self_instruct" / "data" / "finetuning" / "t0_train_50k" / "data_per_template",
}
LABELS = ROOT / "bench" / "labels"
RESULTS = ROOT / "bench" / "results"
PER_RULE = 25
KEPT = 60


def cpu() -> float:
    own, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_pipeline(source: str, run_dir: Path) -> dict:
    from curatune.config import validate_config
    from curatune.curate.pipeline import run_curate
    from curatune.rundir import RunDir

    cfg = validate_config({"run_dir": str(run_dir), "data": {"sources": [{"path": str(SOURCES[source])}]},
                           "curate": {"workers": 2, "progress": False}})
    load0, c0, t0 = os.getloadavg()[0], cpu(), time.perf_counter()
    report = run_curate(cfg, RunDir(cfg.run_dir), force=True)
    return {
        "wall_seconds_including_load": round(time.perf_counter() - t0, 1), "cpu_seconds": round(cpu() - c0, 1),
        "load_before": round(load0, 2), "load_after": round(os.getloadavg()[0], 2), "report": report,
    }


def _draw(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """The n rows whose (seed, id) hash is smallest: a seeded random sample that stays the same
    for the records that stay the same when the rules change (so labels carry over)."""
    keys = frame["id"].map(lambda rid: hashlib.sha256(f"{seed}:{rid}".encode()).hexdigest())
    return frame.assign(_key=keys.values).sort_values("_key").head(n).drop(columns="_key").reset_index(drop=True)


def draw_sample(run_dir: Path, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    from curatune.records import with_ledger_defaults

    removed = with_ledger_defaults(pd.read_parquet(run_dir / "curate" / "removed.parquet"))
    removed = removed[removed["step"] != "load"]
    parts = [_draw(rows.drop_duplicates("id"), PER_RULE, seed) for _, rows in sorted(removed.groupby("reason"))]
    sample = pd.concat(parts, ignore_index=True) if parts else removed.head(0)
    kept = pd.read_parquet(run_dir / "curate" / "kept.parquet")
    return sample, _draw(kept, KEPT, seed)


def _clip(text: str, head: int, tail: int) -> str:
    if len(text) <= head + tail + 40:
        return text
    return f"{text[:head]}\n   [... {len(text) - head - tail} chars ...]\n{text[-tail:]}"


def dump(sample: pd.DataFrame, kept: pd.DataFrame, path: Path) -> None:
    lines: list[str] = []
    for row in sample.to_dict("records"):
        messages = list(row["messages"])
        turn = int(row["turn"])
        lines.append(f"######## {row['reason']} | {row['action']} | id {row['id']} | turn {turn} | {row['detail'][:300]}")
        span = row["span"] or ""
        flagged = next((i for i in range(max(turn, 0), len(messages)) if span and span in messages[i]["content"]),
                       turn if row["action"] == "drop" else next(
                           (i for i in range(max(turn, 0), len(messages)) if messages[i]["role"] == "assistant"), turn))
        for i, m in enumerate(messages):
            content = m["content"]
            mark = "  "
            if i == flagged:
                mark = "=>"
                if span and span in content:
                    content = content.replace(span, f">>>{span}<<<", 1)
                text = _clip(content, 1500, 700)
            elif row["action"] == "trim" and i >= turn >= 0:
                text = _clip(content, 150, 0)
                mark = "x "
            else:
                text = _clip(content, 300, 150)
            lines.append(f"{mark}[{i} {m['role']}] {text}")
        lines.append("")
    for row in kept.to_dict("records"):
        lines.append(f"######## kept | id {row['id']} | {len(row['messages'])} messages")
        for i, m in enumerate(row["messages"]):
            lines.append(f"  [{i} {m['role']}] {_clip(m['content'], 500, 300)}")
        lines.append("")
    path.write_text("\n".join(lines), encoding="utf-8")


def score(sample: pd.DataFrame, kept: pd.DataFrame, labels_path: Path) -> dict:
    labels = {}
    if labels_path.exists():
        for line in labels_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                labels[(row["id"], row["reason"])] = row
    rules = {}
    for reason, rows in sample.groupby("reason"):
        verdicts = [labels.get((rid, reason), {}).get("verdict") for rid in rows["id"]]
        rules[reason] = _tally(verdicts, actions=dict(rows["action"].value_counts()))
    kept_verdicts = [labels.get((rid, "kept"), {}).get("verdict") for rid in kept["id"]]
    return {"rules": rules, "kept": _tally(kept_verdicts)}


def _tally(verdicts: list, actions: dict | None = None) -> dict:
    right = sum(v == "right" for v in verdicts)
    labelled = sum(v in ("right", "wrong") for v in verdicts)
    out = {"sampled": len(verdicts), "labelled": labelled, "right": right}
    if actions:
        out["sampled_by_action"] = {k: int(v) for k, v in actions.items()}
    if labelled:
        low, high = proportion_confint(right, labelled, alpha=0.05, method="wilson")
        out.update(precision=round(right / labelled, 3), wilson_low=round(float(low), 3), wilson_high=round(float(high), 3))
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", choices=sorted(SOURCES))
    parser.add_argument("--run-dir", type=Path, default=None, help="Reuse or write this run directory.")
    parser.add_argument("--reuse", action="store_true", help="Score an existing run directory without re-running.")
    parser.add_argument("--dump", type=Path, default=None, help="Print the sample to this file for labelling.")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not SOURCES[args.source].exists():
        sys.exit(f"needs {SOURCES[args.source]}")
    run_dir = args.run_dir or Path("/tmp") / f"curate-chat-audit-{args.source}"
    timing = None
    if not args.reuse:
        timing = run_pipeline(args.source, run_dir)
        print(json.dumps({k: v for k, v in timing.items() if k != "report"}), flush=True)
    sample, kept = draw_sample(run_dir, args.seed)
    if args.dump:
        dump(sample, kept, args.dump)
        print(f"wrote {args.dump}: {len(sample)} flagged + {len(kept)} kept records")
    scores = score(sample, kept, LABELS / f"{args.source}.jsonl")
    report = json.loads((run_dir / "curate" / "report.json").read_text())
    summary = {
        "source": str(SOURCES[args.source].relative_to(ROOT.parent)), "seed": args.seed,
        "input_records": report["input_records"], "kept": report["kept"], "removed": report["removed"],
        "trimmed_records": report.get("trimmed_records"), "turns_in": report.get("turns_in"),
        "turns_kept": report.get("turns_kept"), "turns_removed": report.get("turns_removed"),
        "by_reason": report.get("by_reason"), "steps": [
            {k: s.get(k) for k in ("name", "input", "kept", "removed", "trimmed", "seconds")} for s in report["steps"]
        ],
        **scores,
    }
    if timing:
        summary["timing"] = {k: v for k, v in timing.items() if k != "report"}
    write_results(args.source, summary)
    print(json.dumps(scores, indent=1))


def write_results(source: str, summary: dict) -> None:
    path = RESULTS / "curate_chat_audit.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    previous = results.get(source, {})
    if "timing" not in summary and "timing" in previous:
        summary["timing"] = previous["timing"]  # a --reuse run keeps the measured time
    results[source] = summary
    path.write_text(json.dumps(results, indent=1) + "\n")
    lines = ["# Curation rules on real data: hand-labelled precision per rule", "",
             "Written by `bench/curate_chat_audit.py`. Seeded random samples (seed 0) of up to 25 ledger rows per rule "
             "(dropped or trimmed) and 60 kept records, read and labelled by hand; labels in `bench/labels/`. "
             "Precision = labelled right / labelled, with a Wilson 95% interval.", ""]
    for name, s in results.items():
        lines += [f"## {name}: `{s['source']}`", ""]
        lines.append(f"{s['input_records']} records in, {s['kept']} kept, {s['removed']} dropped, "
                     f"{s.get('trimmed_records')} trims; turns {s.get('turns_in')} in, {s.get('turns_kept')} kept, "
                     f"{s.get('turns_removed')} removed.")
        if s.get("timing"):
            t = s["timing"]
            lines.append(f"Default pipeline: {t['wall_seconds_including_load']} s wall (loading included), "
                         f"{t['cpu_seconds']} s CPU, load average {t['load_before']} -> {t['load_after']} on the 2-core machine.")
        lines += ["", "| rule | dropped | trimmed | sampled | right | precision | Wilson 95% |", "|---|---:|---:|---:|---:|---:|---|"]
        by_reason = s.get("by_reason") or {}
        for reason, r in sorted(s["rules"].items()):
            counts = by_reason.get(reason, {})
            interval = f"{r['wilson_low']:.2f}–{r['wilson_high']:.2f}" if "precision" in r else "—"
            lines.append(f"| {reason} | {counts.get('dropped', 0)} | {counts.get('trimmed', 0)} | {r['sampled']} | "
                         f"{r['right']}/{r['labelled']} | {r.get('precision', '—')} | {interval} |")
        k = s["kept"]
        interval = f"{k['wilson_low']:.2f}–{k['wilson_high']:.2f}" if "precision" in k else "—"
        lines += ["", f"Kept sample: {k['right']}/{k['labelled']} clean ({k.get('precision', '—')}, Wilson {interval}).", ""]
    (RESULTS / "curate_chat_audit.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
