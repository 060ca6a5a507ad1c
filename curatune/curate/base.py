"""The interface every curation step shares (in the spirit of datatrove's pipeline steps).

A step has a ``name``, its own pydantic config, and ``run(records, context) -> StepResult``.
It never does bookkeeping: the :class:`~curatune.curate.pipeline.CurationPipeline` keeps
the ledger, timings, progress and the records-in = kept + removed invariant for all steps.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterable, Iterator, Sequence

from pydantic import BaseModel
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.progress import Progress as _RP

from curatune.models import cache_root
from curatune.records import Record

#: What a rule does to a record that fails it: remove it whole, or cut the conversation before
#: the first failing exchange and keep the clean prefix (see :mod:`curatune.curate.turns`).
DROP, TRIM = "drop", "trim"
ACTIONS = (DROP, TRIM)


@dataclass
class Removal:
    """One ledger row: why a record was removed (``drop``) or cut short (``trim``).

    ``turn``: index into the record's messages of the first message removed (trim) or of
    the flagged message (drop); -1 when the rule judges the whole record. ``span``: the
    exact flagged text, a substring of the flagged message ("" when there is none).
    ``replacement``: for a trim, the shortened record that takes the original's place
    among the kept records (its id goes to the ledger's ``kept_as``). ``eval_item``: the
    evaluation item a contaminated record overlaps (the ledger column of that name).
    """

    record: Record
    reason: str
    detail: str = ""
    duplicate_of: str | None = None
    cluster_id: str | None = None
    action: str = DROP
    turn: int = -1
    span: str = ""
    replacement: Record | None = None
    eval_item: str | None = None

    def __post_init__(self) -> None:
        if self.action not in ACTIONS:
            raise ValueError(f"unknown action {self.action!r}")
        if (self.action == TRIM) != (self.replacement is not None):
            raise ValueError("a trim needs the trimmed record (replacement), a drop has none")

    @property
    def turns_removed(self) -> int:
        kept = len(self.replacement.messages) if self.replacement is not None else 0
        return len(self.record.messages) - kept


@dataclass
class StepResult:
    kept: list[Record]
    removed: list[Removal]
    counters: dict[str, Any] = field(default_factory=dict)


class Progress:
    """A tiny progress interface so steps do not depend on rich (tests pass a silent one)."""

    def task(self, description: str, total: int | None) -> "ProgressTask":
        return ProgressTask()


class ProgressTask:
    def advance(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "ProgressTask":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RichProgress(Progress):
    """Progress bars on stderr via rich; one bar per long loop of a step."""

    def __init__(self, console=None):
        self._progress = _RP(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=console, transient=False,
        )

    def __enter__(self) -> "RichProgress":
        self._progress.start()
        return self

    def __exit__(self, *exc) -> None:
        self._progress.stop()

    def task(self, description: str, total: int | None) -> ProgressTask:
        progress = self._progress
        task_id = progress.add_task(description, total=total)

        class _Task(ProgressTask):
            def advance(self, n: int = 1) -> None:
                progress.advance(task_id, n)

            def close(self) -> None:
                if total is not None:
                    progress.update(task_id, completed=total)

        return _Task()


@dataclass
class CurateContext:
    """What steps may need beyond the records: models, caches, evaluation data, workers."""

    workers: int = 1
    cache_dir: Path | None = None
    embedder: str = "default"
    model: str = "default"
    device: str = "auto"
    dtype: str = "auto"
    trust_remote_code: bool = False
    #: Texts of evaluation items to decontaminate against: (item id, text).
    eval_items_loader: Callable[[], list[tuple[str, str]]] | None = None
    progress: Progress = field(default_factory=Progress)

    def resolved_cache_dir(self) -> Path:
        if self.cache_dir is not None:
            return Path(self.cache_dir)
        return default_cache_dir()


def default_cache_dir() -> Path:
    """The embedding cache's root: curatune's one cache root ($CURATUNE_CACHE, see models.cache_root)."""
    return cache_root()


@dataclass(frozen=True)
class Rule:
    """What one reason of a step judges (one assistant ``turn`` with its user turn, or the
    whole ``record``) and what it does by default (``drop`` or ``trim``)."""

    reason: str
    scope: str  # "turn" | "record"
    default_action: str
    description: str


class Step:
    """Base class: subclasses set ``config_class`` and implement ``run``.

    A step's name is its config's ``name`` (the key users write in ``curate.steps``), so it
    is spelled once, in curatune/curate/config.py.

    ``run`` returns kept records and :class:`Removal` rows. A trim puts the shortened
    record in ``kept`` (where the original was) and a ``Removal(action="trim",
    replacement=shortened)`` for the original; the pipeline checks and counts both.
    """

    name: ClassVar[str]
    config_class: ClassVar[type[BaseModel]]
    #: Reasons this step may write to the ledger (documentation and label matching).
    reasons: ClassVar[tuple[str, ...]] = ()
    #: Per reason: what it judges and its default action (steps without rules judge records and drop).
    rules: ClassVar[dict[str, Rule]] = {}

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "config_class" in cls.__dict__:  # a configurable step is named by its config
            cls.name = cls.config_class.model_fields["name"].default

    def __init__(self, config: BaseModel):
        self.config = config

    def run(self, records: list[Record], context: CurateContext) -> StepResult:  # pragma: no cover
        raise NotImplementedError


def text_of(record: Record, field_name: str) -> str:
    if field_name == "prompt":
        return record.prompt
    if field_name == "response":
        return record.response
    return record.text


def chunked(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def category_counts(records: Iterable[Record]) -> dict[str, int]:
    counts = Counter(r.category if r.category is not None else "(none)" for r in records)
    return dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))
