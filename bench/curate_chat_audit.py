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

5. ``--holdout SEED --rules refusal truncated``: a fresh held-out sample, drawn after the rules
   were tuned: every id already in ``bench/labels/*.jsonl`` (other than this sample's own file,
   ``bench/labels/<source>_seed<SEED>.jsonl``) is excluded, then per rule
   ``DataFrame.sample(n=min(25, available), random_state=SEED)`` of the ledger rows (one per
   record, ordered by id) and the same for 60 kept records. Kept rows are labelled
   ``clean``, ``should_be_removed`` or ``defect_in_earlier_turn``. Results go to
   bench/results/curate_chat_audit_seed<SEED>.md and .json.

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
    from curatune.curate.stage import run_curate
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


def labelled_ids(exclude_file: Path) -> set[str]:
    """Every record id in bench/labels/*.jsonl except ``exclude_file`` (the held-out sample's own labels)."""
    ids: set[str] = set()
    for path in sorted(LABELS.glob("*.jsonl")):
        if path.resolve() == exclude_file.resolve():
            continue
        ids |= {json.loads(line)["id"] for line in path.read_text(encoding="utf-8").splitlines() if line.strip()}
    return ids


def draw_holdout(run_dir: Path, seed: int, rules: list[str], exclude: set[str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A fresh sample: per rule up to PER_RULE ledger rows and KEPT kept records, none labelled before."""
    from curatune.records import with_ledger_defaults

    removed = with_ledger_defaults(pd.read_parquet(run_dir / "curate" / "removed.parquet"))
    removed = removed[(removed["step"] != "load") & ~removed["id"].isin(exclude)]
    parts = []
    for rule in rules:
        rows = removed[removed["reason"] == rule].drop_duplicates("id").sort_values("id")
        parts.append(rows.sample(n=min(PER_RULE, len(rows)), random_state=seed))
    sample = pd.concat(parts, ignore_index=True)
    kept = pd.read_parquet(run_dir / "curate" / "kept.parquet")
    kept = kept[~kept["id"].isin(exclude)].sort_values("id")
    return sample, kept.sample(n=min(KEPT, len(kept)), random_state=seed).reset_index(drop=True)


KEPT_VERDICTS = ("clean", "should_be_removed", "defect_in_earlier_turn")


def score_holdout(sample: pd.DataFrame, kept: pd.DataFrame, labels_path: Path, available: dict[str, int]) -> dict:
    labels = {}
    if labels_path.exists():
        for line in labels_path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                row = json.loads(line)
                labels[(row["id"], row["reason"])] = row
    rules = {}
    for reason, rows in sample.groupby("reason"):
        verdicts = [labels.get((rid, reason), {}).get("verdict") for rid in rows["id"]]
        rules[reason] = {**_tally(verdicts, actions=dict(rows["action"].value_counts())),
                         "unlabelled_available": available.get(reason, 0),
                         "wrong": [{"id": rid, "note": labels[(rid, reason)].get("note", "")} for rid in rows["id"]
                                   if labels.get((rid, reason), {}).get("verdict") == "wrong"]}
    for rule, n in available.items():
        if rule not in rules:  # nothing left to sample: every flagged record was labelled before
            rules[rule] = {"sampled": 0, "labelled": 0, "right": 0, "unlabelled_available": n, "wrong": []}
    kept_verdicts = [labels.get((rid, "kept"), {}).get("verdict") for rid in kept["id"]]
    counts = {v: sum(k == v for k in kept_verdicts) for v in KEPT_VERDICTS}
    counts["clean_with_out_of_scope_problem"] = sum(
        labels.get((rid, "kept"), {}).get("verdict") == "clean"
        and labels[(rid, "kept")].get("note", "").startswith("out of scope") for rid in kept["id"])
    tally = _tally(["right" if v == "clean" else ("wrong" if v in KEPT_VERDICTS else None) for v in kept_verdicts])
    return {"rules": rules, "kept_sample": {**tally, "verdicts": counts, "not_clean": [
        {"id": rid, "verdict": labels[(rid, "kept")]["verdict"], "note": labels[(rid, "kept")].get("note", "")}
        for rid in kept["id"] if labels.get((rid, "kept"), {}).get("verdict") in KEPT_VERDICTS[1:]]}}


def write_holdout_results(source: str, seed: int, summary: dict) -> None:
    name = f"curate_chat_audit_seed{seed}"
    (RESULTS / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    lines = [f"# Chat curation rules: held-out hand labels (seed {seed}), {source}", "",
             f"Written by `python bench/curate_chat_audit.py {source} --holdout {seed} --rules "
             f"{' '.join(summary['rules_sampled'])}`. A fresh sample drawn after the rules were tuned (and after the "
             "refusal fix ef9ad37): every id already in `bench/labels/*.jsonl` is excluded, then per rule "
             f"`DataFrame.sample(n=min({PER_RULE}, available), random_state={seed})` over the ledger rows (one per record, "
             f"ordered by id) and {KEPT} kept records the same way. Labels: `bench/labels/{source}_seed{seed}.jsonl`. "
             "Precision = right / labelled with a Wilson 95% interval.", "",
             f"Run: {summary['input_records']} records in, {summary['kept']} kept, {summary['removed']} dropped, "
             f"{summary.get('trimmed_records')} trims; turns {summary.get('turns_in')} in, {summary.get('turns_kept')} kept, "
             f"{summary.get('turns_removed')} removed.", "",
             "| rule | dropped | trimmed | unlabelled before this draw | sampled (drop/trim) | right | precision | Wilson 95% |",
             "|---|---:|---:|---:|---|---:|---:|---|"]
    by_reason = summary.get("by_reason") or {}
    for reason, r in sorted(summary["rules"].items()):
        counts = by_reason.get(reason, {})
        actions = r.get("sampled_by_action", {})
        interval = f"{r['wilson_low']:.2f}–{r['wilson_high']:.2f}" if "precision" in r else "—"
        if not r["sampled"]:
            lines.append(f"| {reason} | {counts.get('dropped', 0)} | {counts.get('trimmed', 0)} | 0 of "
                         f"{summary['flagged_records'].get(reason)} flagged records (all labelled in earlier samples) | "
                         "0 | — | — | — |")
            continue
        lines.append(f"| {reason} | {counts.get('dropped', 0)} | {counts.get('trimmed', 0)} | {r['unlabelled_available']} | "
                     f"{r['sampled']} ({actions.get('drop', 0)}/{actions.get('trim', 0)}) | {r['right']}/{r['labelled']} | "
                     f"{r.get('precision', '—')} | {interval} |")
    k = summary["kept_sample"]
    interval = f"{k['wilson_low']:.2f}–{k['wilson_high']:.2f}" if "precision" in k else "—"
    v = k["verdicts"]
    lines += ["", f"Kept sample: {k['right']}/{k['labelled']} clean ({k.get('precision', '—')}, Wilson {interval}); "
              f"{v['should_be_removed']} should have been removed, {v['defect_in_earlier_turn']} have a defect in an "
              f"earlier turn only. Clean means free of what the rules target (cut-off turns, refusals, boilerplate, "
              f"empty turns, degenerate repetition, wrong language, duplicates); correctness is not judged. "
              f"{v['clean_with_out_of_scope_problem']} of the clean ones have a problem no rule targets (notes "
              "starting 'out of scope').", "", "## Wrong verdicts and unclean kept records", ""]
    for reason, r in sorted(summary["rules"].items()):
        lines += [f"- `{w['id']}` ({reason}): {w['note']}" for w in r["wrong"]]
    lines += [f"- `{w['id']}` (kept, {w['verdict']}): {w['note']}" for w in k["not_clean"]]
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")


def _clip(text: str, head: int, tail: int) -> str:
    if len(text) <= head + tail + 40:
        return text
    return f"{text[:head]}\n   [... {len(text) - head - tail} chars ...]\n{text[-tail:] if tail else ''}"


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
    return {"rules": rules, "kept_sample": _tally(kept_verdicts)}


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
    parser.add_argument("--holdout", type=int, default=None, metavar="SEED",
                        help="Draw a fresh held-out sample with this random_state, excluding every labelled id.")
    parser.add_argument("--rules", nargs="+", default=["refusal", "truncated"], help="Rules of the held-out sample.")
    args = parser.parse_args()
    if not SOURCES[args.source].exists():
        sys.exit(f"needs {SOURCES[args.source]}")
    run_dir = args.run_dir or Path("/tmp") / f"curate-chat-audit-{args.source}"
    timing = None
    if not args.reuse:
        timing = run_pipeline(args.source, run_dir)
        print(json.dumps({k: v for k, v in timing.items() if k != "report"}), flush=True)
    if args.holdout is not None:
        holdout(args, run_dir)
        return
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


def holdout(args, run_dir: Path) -> None:
    labels_path = LABELS / f"{args.source}_seed{args.holdout}.jsonl"
    exclude = labelled_ids(labels_path)
    sample, kept = draw_holdout(run_dir, args.holdout, args.rules, exclude)
    ledger = pd.read_parquet(run_dir / "curate" / "removed.parquet", columns=["id", "reason", "step"])
    ledger = ledger[(ledger["step"] != "load") & ~ledger["id"].isin(exclude)].drop_duplicates(["id", "reason"])
    available = {rule: int((ledger["reason"] == rule).sum()) for rule in args.rules}
    flagged = pd.read_parquet(run_dir / "curate" / "removed.parquet", columns=["id", "reason"])
    flagged_records = {rule: int(flagged.loc[flagged["reason"] == rule, "id"].nunique()) for rule in args.rules}
    if args.dump:
        dump(sample, kept, args.dump)
        print(f"wrote {args.dump}: {len(sample)} flagged + {len(kept)} kept records")
    scores = score_holdout(sample, kept, labels_path, available)
    report = json.loads((run_dir / "curate" / "report.json").read_text())
    summary = {
        "source": str(SOURCES[args.source].relative_to(ROOT.parent)), "random_state": args.holdout,
        "rules_sampled": args.rules, "excluded_labelled_ids": len(exclude),
        **{k: report.get(k) for k in ("input_records", "kept", "removed", "trimmed_records", "turns_in", "turns_kept",
                                      "turns_removed", "by_reason")},
        "flagged_records": flagged_records, **scores, "load_average_now": [round(x, 2) for x in os.getloadavg()],
    }
    write_holdout_results(args.source, args.holdout, summary)
    print(json.dumps({r: {k: v for k, v in s.items() if k != "wrong"} for r, s in scores["rules"].items()}, indent=1))
    print(json.dumps({k: v for k, v in scores["kept_sample"].items() if k != "not_clean"}))


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
        load = next((st for st in s["steps"] if st["name"] == "load"), None)
        lines.append(f"{s['input_records']} records in, {s['kept']} kept, {s['removed']} dropped "
                     f"({load['removed'] if load else 0} of them rejected by the loader: no user or assistant turn, "
                     f"empty conversation), {s.get('trimmed_records')} trims; turns (messages) {s.get('turns_in')} in, "
                     f"{s.get('turns_kept')} kept, {s.get('turns_removed')} removed.")
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
        k = s["kept_sample"]
        interval = f"{k['wilson_low']:.2f}–{k['wilson_high']:.2f}" if "precision" in k else "—"
        lines += ["", f"Kept sample: {k['right']}/{k['labelled']} clean ({k.get('precision', '—')}, Wilson {interval}).", ""]
    (RESULTS / "curate_chat_audit.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
