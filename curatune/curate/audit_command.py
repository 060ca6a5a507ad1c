"""`curatune audit RUN_DIR`: label a seeded sample of each rule's removals in the terminal,
then print each rule's precision with its Wilson interval and the good records it lost.

Record text is always drawn as rich ``Text`` (never markup), with control characters made
visible, so nothing in the data can style, hide or move what the terminal shows.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Optional

import pandas as pd
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from curatune.curate.audit import (
    KEPT,
    AuditItem,
    AuditSummary,
    Label,
    LabelStore,
    audit_run,
    build_sample,
    excerpt,
    read_kept,
    read_labels,
    read_ledger,
    span_message,
    summarize,
    table_rows,
    write_labels,
)
from curatune.errors import CuratuneError
from curatune.rundir import RunDir

HIGHLIGHT = "bold black on yellow"
CUT_STYLE = "dim"
# Control characters other than newline and tab would move the cursor or recolour the
# terminal (ANSI escapes in scraped chats): show them as \xNN instead.
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
ANSWERS = {"r": "right", "right": "right", "w": "wrong", "wrong": "wrong", "s": "skip", "skip": "skip",
           "q": "quit", "quit": "quit"}
PROMPT = "[bold]r[/bold]ight / [bold]w[/bold]rong / [bold]s[/bold]kip / [bold]q[/bold]uit (a note may follow: 'w list answer') > "


def visible(text: str) -> str:
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


# ----------------------------------------------------------------------------- one record


def message_text(content: str, span: str, limit: int | None, style: str = "") -> Text:
    text = Text(style=style)
    parts = excerpt(content, span, limit)
    if not parts:
        text.append("(empty)", style="italic dim")
    for piece, kind in parts:
        if kind == "gap":
            text.append(f"\n … {len(piece):,} characters not shown (--full shows everything) …\n", style="italic cyan")
        else:
            text.append(visible(piece), style=HIGHLIGHT if kind == "span" else None)
    return text


def record_header(item: AuditItem, position: int, total: int, label: Label | None) -> Text:
    head = Text()
    head.append(f"[{position}/{total}] ", style="dim")
    head.append(item.reason, style="bold magenta")
    head.append(f" · {item.action}", style="bold red" if item.action == "drop" else "bold yellow" if item.action == "trim" else "bold green")
    if item.step:
        head.append(f" · step {item.step}", style="dim")
    head.append(f" · id {item.id} · sample #{item.rank}", style="dim")
    if item.source or item.category:
        head.append(f"\nsource {visible(item.source or '—')} · category {visible(item.category or '—')}", style="dim")
    if item.detail:
        head.append("\ndetail: ", style="bold")
        head.append(visible(item.detail))
    if item.action == "trim" and item.turn >= 0:
        head.append(f"\ntrimmed: messages {item.turn}–{len(item.messages) - 1} cut", style="yellow")
        if item.kept_as:
            head.append(f"; the first {item.turn} kept as record {item.kept_as}", style="yellow")
    if item.duplicate_of:
        head.append(f"\nduplicate of {item.duplicate_of}", style="bold")
    if item.span and span_message(item) is None:
        head.append("\nthe flagged text was not found in the conversation: ", style="yellow")
        head.append(visible(item.span[:200]), style=HIGHLIGHT)
    if label is not None:
        head.append(f"\nlabelled {label.verdict}" + (f" ({visible(label.note)})" if label.note else "")
                    + f" at {label.labelled_at}", style="bold cyan")
    return head


def render_item(console: Console, item: AuditItem, position: int, total: int, *, label: Label | None = None,
                limit: int | None = 2000, twin: list[dict] | None = None) -> None:
    console.rule(style="blue")
    console.print(record_header(item, position, total, label))
    marked = span_message(item)
    if not item.messages:
        console.print(Text("(no messages: the loader rejected the raw row below)", style="italic"))
        console.print(message_text(item.meta, "", limit))
    for index, message in enumerate(item.messages):
        cut = item.cut(index)
        title = Text(f"── {visible(message['role'])} · message {index}", style="bold " + ("dim" if cut else "cyan"))
        if cut and index == item.turn:
            title.append("  ✂ cut from here by the trim", style="bold yellow")
        if item.flagged(index):
            title.append("  ⚑ flagged", style="bold yellow")
        console.print(title)
        console.print(message_text(message["content"], item.span if index == marked else "", limit,
                                   style=CUT_STYLE if cut else ""))
    if twin is not None:
        console.print(Text(f"── its kept twin {item.duplicate_of} ──", style="bold green"))
        for message in twin:
            console.print(Text(f"{visible(message['role'])}:", style="green"), message_text(message["content"], "", 600))


# ----------------------------------------------------------------------------- summary


def summary_table(summary: AuditSummary) -> Table:
    rows = table_rows(summary)
    table = Table(title=f"rule precision: right / labelled, Wilson {summary.confidence:.0%} interval")
    for column in rows[0] if rows else ["rule"]:
        table.add_column(column, justify="left" if column in ("rule", "labelled") else "right",
                         no_wrap=column == "rule", overflow="fold")
    for row in rows:
        style = "dim" if row["precision [95% CI]"] == "not audited" else None
        table.add_row(*(Text(visible(value)) for value in row.values()), style=style)
    return table


def print_summary(console: Console, summary: AuditSummary) -> None:
    console.print(summary_table(summary))
    console.print(
        f"{summary.labels} labels in {summary.labels_path}"
        + (f"; {summary.stale} match no record this run removed (or kept) for that reason" if summary.stale else ""),
        highlight=False, style="dim",
    )
    console.print("precision: share of the rule's sampled removals that were right; good records dropped/trimmed: "
                  "(1 - precision) x the rule's count, exact on the labelled records.", style="dim")


# ----------------------------------------------------------------------------- the flow


def ask(console: Console) -> tuple[str, str]:
    """(answer, note); end of input counts as quit."""
    while True:
        try:
            raw = console.input(PROMPT)
        except EOFError:
            return "quit", ""
        word, _, note = raw.strip().partition(" ")
        answer = ANSWERS.get(word.lower())
        if answer:
            return answer, note.strip()
        console.print(f"[red]not an answer:[/red] {raw.strip()[:40]!r}; type r, w, s or q", highlight=False)


def walk(console: Console, run: RunDir, items: list[AuditItem], store: LabelStore, *, redo: bool,
         limit: int | None, twins: pd.DataFrame | None) -> dict[str, int]:
    labels = store.load()
    todo = [item for item in items if redo or item.key not in labels]
    counts = {"right": 0, "wrong": 0, "skip": 0, "already": len(items) - len(todo)}
    if counts["already"]:
        console.print(f"{counts['already']} of {len(items)} sampled records are labelled already "
                      f"(--redo shows them again)", style="dim")
    for position, item in enumerate(todo, start=1):
        twin = None
        if item.duplicate_of and twins is not None:
            hit = twins[twins["id"] == item.duplicate_of]
            twin = [dict(m) for m in hit.iloc[0]["messages"]] if len(hit) else None
        render_item(console, item, position, len(todo), label=labels.get(item.key), limit=limit, twin=twin)
        answer, note = ask(console)
        if answer == "quit":
            console.print("stopped; every answer so far is saved (run the same command to go on)", style="dim")
            break
        counts[answer] += 1
        if answer != "skip":
            store.put(item.id, item.reason, answer, note)
    return counts


def flatten(sample: dict[str, list[AuditItem]]) -> list[AuditItem]:
    return [item for items in sample.values() for item in items]


def _open(run_dir: Path) -> RunDir:
    run = RunDir(run_dir)
    if not run.removed.exists():
        raise CuratuneError(f"{run.removed} not found: {run_dir} has no finished curation "
                            "(run `curatune curate` first, then audit its run directory)")
    return run


def register(app: typer.Typer) -> None:
    @app.command("audit")
    def audit(
        run_dir: Path = typer.Argument(..., help="A run directory with curate/removed.parquet."),
        rule: list[str] = typer.Option([], "--rule", "-r", help="Audit only this rule (reason); repeatable; 'kept' for the kept sample."),
        n: int = typer.Option(25, "--n", min=1, help="Records sampled per rule."),
        seed: int = typer.Option(0, "--seed", help="Sample seed; the same seed gives the same sample."),
        kept: int = typer.Option(60, "--kept", min=0, help="Kept records sampled (0: none)."),
        summary_only: bool = typer.Option(False, "--summary", help="Only print the precision table."),
        as_json: bool = typer.Option(False, "--json", help="Print the precision summary as JSON (implies --summary)."),
        labels_file: Optional[Path] = typer.Option(None, "--labels", help="Score with this labels file instead of the run's own (with --summary/--json)."),
        import_file: Optional[Path] = typer.Option(None, "--import", help="Merge labels from this JSONL file into the run's labels (its labels win)."),
        export_file: Optional[Path] = typer.Option(None, "--export", help="Write the run's labels to this JSONL file."),
        redo: bool = typer.Option(False, "--redo", help="Show labelled records of the sample again (to change an answer)."),
        full: bool = typer.Option(False, "--full", help="Show long messages whole (default: beginning, end and the flagged span)."),
    ) -> None:
        """Label a seeded sample of each rule's removals right or wrong; print each rule's precision.

        Answers are saved at once in RUN_DIR/audit/labels.jsonl, keyed by record content and
        reason, so a stopped audit resumes and a re-run of curation keeps its labels.
        """
        console = Console(highlight=False)
        run = _open(run_dir)
        store = LabelStore.of(run)
        for given in (import_file, labels_file):
            if given is not None and not given.is_file():
                raise CuratuneError(f"{given}: labels file not found")
        if import_file is not None:
            counts = store.merge(read_labels(import_file))
            console.print(f"imported {import_file}: {counts['added']} added, {counts['replaced']} replaced, "
                          f"{counts['unchanged']} unchanged -> {store.path}")
        if export_file is not None:
            labels = store.load()
            write_labels(export_file, labels.values())
            console.print(f"wrote {len(labels)} labels to {export_file}")
        if import_file is not None or export_file is not None or summary_only or as_json:
            result = audit_run(run, labels_file)
            if as_json:
                typer.echo(json.dumps({"run_dir": str(run.root), **result.to_dict()}, indent=2, ensure_ascii=False))
            elif import_file is not None or summary_only:
                print_summary(console, result)
            return
        if labels_file is not None:
            raise CuratuneError("--labels scores a labels file without changing it: use it with --summary or --json "
                                "(or --import FILE to add its labels to the run)")

        removed = read_ledger(run.removed)
        kept_frame = read_kept(run.kept) if run.kept.exists() else None
        known = set(removed["reason"]) | ({KEPT} if kept_frame is not None else set())
        unknown = [r for r in rule if r not in known]
        if unknown:
            raise CuratuneError(f"no rule {', '.join(map(repr, unknown))} in {run.removed}; rules there: "
                                f"{', '.join(sorted(known))}")
        sample = build_sample(removed, kept_frame, rules=rule or None, n=n, seed=seed, n_kept=kept)
        items = flatten(sample)
        console.print(f"auditing {run.root}: " + ", ".join(f"{r} {len(v)}" for r, v in sample.items())
                      + f" sampled (seed {seed}); labels go to {store.path}", style="dim")
        counts = walk(console, run, items, store, redo=redo, limit=None if full else 2000, twins=kept_frame)
        console.print(f"this session: {counts['right']} right, {counts['wrong']} wrong, {counts['skip']} skipped")
        kept_ids = kept_frame["id"] if kept_frame is not None else None
        print_summary(console, summarize(removed, kept_ids, store.load(), str(store.path)))
