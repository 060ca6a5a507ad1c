"""Our BLEU / chrF++ / TER against the `sacrebleu` command line, on the same files.

Right first: every corpus score must equal the CLI's to two decimals and every signature
must be identical. Then fast: wall time of our scorer (corpus score + signature, and with
the per-example sentence scores the runner also writes) next to the CLI (one process
per run, interpreter start included) and sacrebleu's Python API in this process.

Cases:
  * multi30k test_2016_flickr (German, 1000 sentences, ../shared/data; skipped when absent):
    the references against a seeded perturbation of themselves (dropped, swapped and
    replaced words, lower-cased sentences) and against the untranslated English source;
  * bench/fixtures/sacrebleu_{hyp,ref}.txt: 12 hand-written pairs with punctuation,
    numbers, non-ASCII text, JSON, an empty hypothesis and odd whitespace.

Run:  nice python bench/eval_sacrebleu.py   (writes bench/results/eval_sacrebleu.{json,md})
"""
from __future__ import annotations

import gzip
import json
import platform
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import sacrebleu

from curatune.evaluate.metrics import corpus_bleu, corpus_chrf, corpus_ter

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data" / "mt" / "multi30k" / "data" / "task1" / "raw"
FIXTURES = ROOT / "bench" / "fixtures"
RESULTS = ROOT / "bench" / "results"
REPEATS = 3
OURS = {"bleu": corpus_bleu, "chrf": corpus_chrf, "ter": corpus_ter}
CLI_NAMES = {"BLEU": "bleu", "chrF2++": "chrf", "TER": "ter"}


def read_lines(path: Path) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [line.rstrip("\n") for line in f]


def perturb(lines: list[str], seed: int = 0) -> list[str]:
    """A plausible 'system output': the reference with seeded word-level noise."""
    rng = random.Random(seed)
    vocabulary = [w for line in lines for w in line.split()]
    out = []
    for line in lines:
        words = line.split()
        kept = []
        for w in words:
            r = rng.random()
            if r < 0.08:
                continue  # dropped
            if r < 0.16:
                w = rng.choice(vocabulary)  # replaced
            kept.append(w)
        for i in range(len(kept) - 1):
            if rng.random() < 0.08:
                kept[i], kept[i + 1] = kept[i + 1], kept[i]  # swapped
        text = " ".join(kept)
        out.append(text.lower() if rng.random() < 0.1 else text)
    return out


def cases() -> list[tuple[str, list[str], list[str]]]:
    found = []
    if SHARED.exists():
        refs = read_lines(SHARED / "test_2016_flickr.de.gz")
        found.append(("multi30k-de perturbed", perturb(refs), refs))
        found.append(("multi30k-de vs untranslated en", read_lines(SHARED / "test_2016_flickr.en.gz"), refs))
    else:
        print(f"note: {SHARED} not found; multi30k cases skipped", file=sys.stderr)
    found.append(("fixture (12 hand-written pairs)", read_lines(FIXTURES / "sacrebleu_hyp.txt"),
                  read_lines(FIXTURES / "sacrebleu_ref.txt")))
    return found


def run_cli(hyp_path: Path, ref_path: Path) -> dict[str, dict]:
    cmd = ["sacrebleu", str(ref_path), "-i", str(hyp_path), "-m", "bleu", "chrf", "ter",
           "--chrf-word-order", "2", "-w", "4", "-f", "json"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return {CLI_NAMES[e["name"]]: {"score": float(e["score"]), "signature": e["signature"]} for e in json.loads(out.stdout)}


def best_of(fn, repeats: int = REPEATS) -> tuple[float, object]:
    best, value = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        value = fn()
        best = min(best, time.perf_counter() - start)
    return best, value


def corpus_only(hyps: list[str], refs: list[str]) -> dict[str, tuple[float, str]]:
    """Our corpus scores without the sentence-level columns (what the CLI computes)."""
    from sacrebleu.metrics import BLEU, CHRF, TER

    out = {}
    for name, metric in (("bleu", BLEU()), ("chrf", CHRF(word_order=2)), ("ter", TER())):
        out[name] = (metric.corpus_score(hyps, [refs]).score, str(metric.get_signature()))
    return out


def main() -> int:
    rows = []
    ok = True
    for label, hyps, refs in cases():
        assert len(hyps) == len(refs), label
        with tempfile.TemporaryDirectory() as tmp:
            hyp_path, ref_path = Path(tmp) / "hyp.txt", Path(tmp) / "ref.txt"
            hyp_path.write_text("\n".join(hyps) + "\n", encoding="utf-8")
            ref_path.write_text("\n".join(refs) + "\n", encoding="utf-8")
            cli_seconds, cli = best_of(lambda: run_cli(hyp_path, ref_path))
        ours_seconds, ours = best_of(lambda: {n: f(hyps, refs) for n, f in OURS.items()})
        corpus_seconds, _ = best_of(lambda: corpus_only(hyps, refs))
        api_seconds, _ = best_of(lambda: (sacrebleu.corpus_bleu(hyps, [refs]),
                                          sacrebleu.corpus_chrf(hyps, [refs], word_order=2),
                                          sacrebleu.corpus_ter(hyps, [refs])))
        for metric in ("bleu", "chrf", "ter"):
            value = ours[metric].corpus[metric]
            signature = ours[metric].signatures[metric]
            same_score = round(value, 2) == round(cli[metric]["score"], 2)
            same_signature = signature == cli[metric]["signature"]
            ok &= same_score and same_signature
            rows.append({
                "case": label, "n": len(hyps), "metric": metric,
                "ours": round(value, 4), "cli": cli[metric]["score"],
                "equal_2dp": same_score, "signature": signature, "same_signature": same_signature,
            })
        rows[-1]["timing"] = {
            "ours_with_sentence_scores_s": round(ours_seconds, 4),
            "ours_corpus_only_s": round(corpus_seconds, 4),
            "sacrebleu_python_api_s": round(api_seconds, 4),
            "sacrebleu_cli_s": round(cli_seconds, 4),
        }
    write_results(rows, ok)
    print(f"{'all equal' if ok else 'MISMATCH'}; results in {RESULTS}/eval_sacrebleu.md")
    return 0 if ok else 1


def write_results(rows: list[dict], ok: bool) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    meta = {"sacrebleu": sacrebleu.__version__, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}", "repeats": REPEATS,
            "all_equal": ok}
    (RESULTS / "eval_sacrebleu.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    lines = [
        "# BLEU / chrF++ / TER: curatune vs the sacrebleu command line",
        "",
        f"Generated by `bench/eval_sacrebleu.py` (sacrebleu {meta['sacrebleu']}, Python {meta['python']}). "
        f"Verdict: **{'every score equal to two decimals, every signature identical' if ok else 'MISMATCH'}**.",
        "",
        "| case | n | metric | curatune | sacrebleu CLI | equal (2 dp) | same signature |",
        "|---|---:|---|---:|---:|:-:|:-:|",
    ]
    for r in rows:
        lines.append(f"| {r['case']} | {r['n']} | {r['metric']} | {r['ours']:.4f} | {r['cli']:.4f} | "
                     f"{'yes' if r['equal_2dp'] else 'NO'} | {'yes' if r['same_signature'] else 'NO'} |")
    lines += ["", "Signatures:", ""]
    for metric in ("bleu", "chrf", "ter"):
        sig = next(r["signature"] for r in rows if r["metric"] == metric)
        lines.append(f"- {metric}: `{sig}`")
    lines += [
        "",
        f"Wall time, best of {REPEATS} (seconds; BLEU + chrF++ + TER together):",
        "",
        "| case | curatune (corpus + sentence scores) | curatune (corpus only) | sacrebleu Python API | sacrebleu CLI (process) | CLI / curatune corpus |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        t = r.get("timing")
        if t:
            ratio = t["sacrebleu_cli_s"] / t["ours_corpus_only_s"] if t["ours_corpus_only_s"] else float("nan")
            lines.append(f"| {r['case']} | {t['ours_with_sentence_scores_s']} | {t['ours_corpus_only_s']} | "
                         f"{t['sacrebleu_python_api_s']} | {t['sacrebleu_cli_s']} | {ratio:.1f}x |")
    lines += [
        "",
        "curatune calls sacrebleu's Python API with the CLI's defaults (chrF word order 2 = chrF++), so the "
        "corpus-only time is the API's. The runner also computes sentence-level scores for the per-example "
        "columns of eval/samples, which costs the extra time in the first column. The CLI time includes "
        "starting a Python process.",
        "",
    ]
    (RESULTS / "eval_sacrebleu.md").write_text("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
