"""Evaluation suites: what data a suite reads and which scorer applies to it.

One class per ``kind`` (see :data:`SUITE_KINDS`). A suite loads its items once per
process, tells the runner what its result depends on (:meth:`Suite.fingerprint`, so a
resumed run rescoring nothing is safe), and scores one loaded model at a time into a
:class:`SuiteScore`: corpus metrics, item counts, per-example rows and signatures.

* ``generation`` (ours): greedy answers to records (the held-out split by default),
  scored with :mod:`curatune.evaluate.metrics`.
* ``multiple_choice``, ``perplexity``, ``lambada``, ``retention``: log-likelihood scoring
  from :mod:`curatune.evaluate.multiple_choice`, :mod:`~curatune.evaluate.perplexity` and
  :mod:`~curatune.evaluate.retention`.
* ``lm_eval``: an lm-evaluation-harness task by name or YAML, run by lm-eval
  (:mod:`curatune.evaluate.lmeval_tasks`; optional dependency).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd

from curatune.chat_format import ChatSettings
from curatune.config import ExperimentConfig
from curatune.data.loaders import load_path
from curatune.errors import DataError
from curatune.evaluate import lmeval_tasks, multiple_choice, perplexity, retention
from curatune.evaluate.generation import GenerationSettings, format_prompt, generate
from curatune.evaluate.lm_scoring import ItemScores
from curatune.evaluate.metrics import (
    COMET_LIKE_VERSION,
    auto_metrics,
    load_default_embedder,
    score_generations,
)
from curatune.models import load_model_and_tokenizer
from curatune.records import RECORD_COLUMNS, Record, frame_to_records
from curatune.runcheck import read_run_parquet
from curatune.rundir import RunDir

SAMPLE_TEXT_COLUMNS = ["example_id", "prompt", "reference", "output"]


@dataclass
class SuiteScore:
    metrics: dict[str, float]
    n_items: dict[str, int]
    samples: pd.DataFrame
    signatures: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class EvalContext:
    """What every suite may need besides the model under test: config, run dir, shared models."""

    def __init__(self, config: ExperimentConfig, run_dir: RunDir, *, progress: bool = True):
        self.config = config
        self.run_dir = run_dir
        self.progress = progress
        self._embedder: Any = None

    @property
    def evaluate(self) -> Any:
        return self.config.evaluate

    def base_model(self) -> tuple[Any, Any]:
        """The base model, shared and cached per process by curatune.models."""
        m = self.config.model
        return load_model_and_tokenizer(m.base, dtype=m.dtype, device=m.device, trust_remote_code=m.trust_remote_code)

    def embedder(self) -> Any:
        if self._embedder is None:
            self._embedder = load_default_embedder(self.config.model.embedder)
        return self._embedder


def select_subset(n: int, limit: int | None, seed: int) -> list[int]:
    """Indices of a fixed random subset (in the original order); all of them without a limit."""
    if limit is None or limit >= n:
        return list(range(n))
    return sorted(np.random.default_rng(seed).choice(n, size=limit, replace=False).tolist())


def data_digest(path: str) -> str:
    """Content hash of a local file or folder (hub ids hash their name only)."""
    local = Path(path).expanduser()
    digest = hashlib.sha1()
    if local.is_file():
        files = [local]
    elif local.is_dir():
        files = sorted(p for p in local.rglob("*") if p.is_file())
    else:
        digest.update(path.encode())
        return digest.hexdigest()[:16]
    for file in files:
        digest.update(str(file.relative_to(local) if local.is_dir() else file.name).encode())
        with open(file, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def samples_frame(per_item: list[dict[str, Any]]) -> pd.DataFrame:
    """Per-example rows with the contract's text columns first; example ids made unique."""
    frame = pd.DataFrame(per_item)
    for column in SAMPLE_TEXT_COLUMNS:
        if column not in frame.columns:
            frame[column] = [str(i) for i in range(len(frame))] if column == "example_id" else ""
    frame["example_id"] = _unique_ids([str(x) for x in frame["example_id"]])
    for column in ("prompt", "reference", "output"):
        frame[column] = frame[column].map(lambda v: "" if v is None else v if isinstance(v, str) else str(v))
    rest = [c for c in frame.columns if c not in SAMPLE_TEXT_COLUMNS]
    return frame[SAMPLE_TEXT_COLUMNS + rest].reset_index(drop=True)


def _unique_ids(ids: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for item in ids:
        count = seen.get(item, 0)
        seen[item] = count + 1
        out.append(item if count == 0 else f"{item}#{count}")
    return out


class Suite:
    """One configured suite; subclasses implement :meth:`_load` and :meth:`score`."""

    kind: ClassVar[str]

    def __init__(self, spec: Any, ctx: EvalContext):
        self.spec = spec
        self.ctx = ctx
        self._items: Any = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def items(self) -> Any:
        if self._items is None:
            self._items = self._load()
        return self._items

    def _load(self) -> Any:
        raise NotImplementedError

    def fingerprint(self) -> dict[str, Any]:
        """Everything the suite's result depends on besides the model."""
        return {"suite": self.spec.model_dump(mode="json", exclude={"stages"}), "seed": self.ctx.evaluate.seed}

    def score(self, model: Any, tokenizer: Any, label: str) -> SuiteScore:
        raise NotImplementedError


# ----------------------------------------------------------------------------- generation


class GenerationTask(Suite):
    kind = "generation"

    @property
    def settings(self) -> GenerationSettings:
        defaults = self.ctx.evaluate.generation
        return GenerationSettings(
            max_new_tokens=self.spec.max_new_tokens or defaults.max_new_tokens,
            batch_size=self.spec.batch_size or defaults.batch_size,
            stop=list(self.spec.stop if self.spec.stop is not None else defaults.stop),
        )

    @property
    def limit(self) -> int | None:
        if self.spec.limit is not None:
            return self.spec.limit
        return self.ctx.evaluate.limit_heldout if self.spec.path is None and not self.on_validation else None

    @property
    def on_validation(self) -> bool:
        """Scores train/validation.parquet to choose a grid's learning rate (GenerationSuite.split)."""
        return getattr(self.spec, "split", "heldout") == "validation"

    def _load(self) -> list[Record]:
        records = self._read_records()
        usable = [r for r in records if any(m["role"] == "assistant" for m in r.messages)]
        if not usable:
            raise DataError(f"suite {self.name}: {self._source_label()} has no record with an assistant answer")
        return [usable[i] for i in select_subset(len(usable), self.limit, self.ctx.evaluate.seed)]

    def _split_path(self) -> Path:
        return self.ctx.run_dir.validation if self.on_validation else self.ctx.run_dir.heldout

    def _source_label(self) -> str:
        return str(self.spec.path or self._split_path())

    def _read_records(self) -> list[Record]:
        if self.spec.path is None:
            path = self._split_path()
            if not path.exists():
                if self.on_validation:
                    raise DataError(
                        f"{path}: the validation split is missing; suite {self.name!r} (split: validation) needs "
                        "the sweep to carve it (train.learning_rates or train.validation_size > 0)"
                    )
                raise DataError(
                    f"{path}: the held-out split is missing; run `curatune train` (it carves the split) "
                    f"or give suite {self.name!r} a path"
                )
            return frame_to_records(read_run_parquet(path))
        path = self.spec.path
        if path.endswith(".parquet") and Path(path).is_file():
            frame = pd.read_parquet(path)
            if set(RECORD_COLUMNS) <= set(frame.columns):
                return frame_to_records(frame)

        result = load_path(path)
        return list(getattr(result, "records", result))

    @property
    def metrics(self) -> list[str]:
        return list(self.spec.metrics or auto_metrics([r.response for r in self.items]))

    def fingerprint(self) -> dict[str, Any]:
        ids = hashlib.sha1("\n".join(r.id for r in self.items).encode()).hexdigest()[:16]
        settings = self.settings
        base = super().fingerprint()
        if not self.on_validation:  # `split` came later: held-out suites keep their earlier fingerprint
            base["suite"].pop("split", None)
        return {
            **base,
            "items": ids,
            "n": len(self.items),
            "metrics": self.metrics,
            "generation": {"max_new_tokens": settings.max_new_tokens, "stop": settings.stop},
            # Prompts change with the chat settings; keys only when set, so older parts stay current.
            **({"chat": chat} if (chat := _chat_identity(self.ctx.config.train)) else {}),
            "embedder": self.ctx.config.model.embedder if "comet_like" in self.metrics else None,
            # comet_like v1 predates this key (adding it would rescore every existing run for
            # nothing); any later version changes the fingerprint, so parts scored by another
            # version are rescored, never mixed with the new ones.
            **({"comet_like_version": COMET_LIKE_VERSION}
               if "comet_like" in self.metrics and COMET_LIKE_VERSION != "1" else {}),
        }

    def score(self, model: Any, tokenizer: Any, label: str) -> SuiteScore:
        records = self.items
        chat = ChatSettings.from_train(self.ctx.config.train)  # the cells' template and system prompt
        prompts = [format_prompt(tokenizer, r.messages, chat, r.tools) for r in records]
        generated = generate(
            model, tokenizer, prompts, self.settings, progress=self.ctx.progress, description=f"{label} {self.name}"
        )
        references = [r.response for r in records]
        sources = [r.prompt for r in records]
        result = score_generations(
            self.metrics,
            generated.outputs,
            references,
            sources,
            embedder_loader=self.ctx.embedder,
            embedder_name=self.ctx.config.model.embedder,
        )
        frame = samples_frame(
            [
                {"example_id": r.id, "prompt": r.prompt, "reference": ref, "output": out}
                for r, ref, out in zip(records, references, generated.outputs)
            ]
        )
        for column, values in result.per_item.items():
            frame[column] = np.asarray(values, dtype=float)
        notes = []
        if generated.truncated_prompts:
            notes.append(f"{generated.truncated_prompts} prompts were cut at the start to fit the model's context")
        return SuiteScore(result.corpus, result.n_items, frame, result.signatures, notes)


# ----------------------------------------------------------------------------- log-likelihood suites


def _from_result(result: ItemScores, signature: str) -> SuiteScore:
    metrics = {k: float(v) for k, v in result.metrics.items()}
    frame = samples_frame(result.per_item)
    return SuiteScore(metrics, {k: result.n_items for k in metrics}, frame, {k: signature for k in metrics})


class MultipleChoiceTask(Suite):
    kind = "multiple_choice"

    def _load(self) -> list[Any]:
        items = multiple_choice.load_mc_items(self.spec.path, limit=self.spec.limit, seed=self.ctx.evaluate.seed)
        if not items:
            raise DataError(f"suite {self.name}: {self.spec.path} has no multiple-choice items")
        return items

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "data": data_digest(self.spec.path)}

    def score(self, model: Any, tokenizer: Any, label: str) -> SuiteScore:
        result = multiple_choice.score_multiple_choice(
            model, tokenizer, self.items, batch_size=self.spec.batch_size, progress=self.ctx.progress
        )
        return _from_result(result, f"multiple_choice|loglik|n:{len(self.items)}|seed:{self.ctx.evaluate.seed}")


class PerplexityTask(Suite):
    kind = "perplexity"

    def _load(self) -> list[Any]:
        return perplexity.load_text_items(self.spec.path, limit=self.spec.limit, seed=self.ctx.evaluate.seed)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "data": data_digest(self.spec.path)}

    def score(self, model: Any, tokenizer: Any, label: str) -> SuiteScore:
        result = perplexity.rolling_perplexity(
            model, tokenizer, self.items, max_length=self.spec.max_length, batch_size=self.spec.batch_size,
            progress=self.ctx.progress,
        )
        return _from_result(result, f"perplexity|rolling|max_length:{self.spec.max_length}")


class LambadaTask(Suite):
    kind = "lambada"

    def _load(self) -> list[Any]:
        return perplexity.load_lambada_items(self.spec.path, limit=self.spec.limit, seed=self.ctx.evaluate.seed)

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), "data": data_digest(self.spec.path)}

    def score(self, model: Any, tokenizer: Any, label: str) -> SuiteScore:
        result = perplexity.score_lambada(
            model, tokenizer, self.items, batch_size=self.spec.batch_size, progress=self.ctx.progress
        )
        return _from_result(result, "lambada|last_word_greedy+perplexity")


class RetentionProbe(Suite):
    """Data-free forgetting probe: divergence from the base model's own answers.

    The reference (the base model's greedy answers and next-token distributions) is built
    once per run and kept in eval/retention/<suite>-<settings digest>.safetensors, so every
    model is compared with the same reference, and changed settings build a new one. The
    base model scores 0 KL against it by construction.
    """

    kind = "retention"

    @property
    def reference_path(self) -> Path:
        return self.ctx.run_dir.eval / "retention" / f"{self.name}-{fingerprint_digest(self.fingerprint())}.safetensors"

    def _load(self) -> Any:
        path = self.reference_path
        if path.exists():
            return retention.RetentionReference.load(path)
        prompts = self._heldout_prompts() if self.spec.prompts == "heldout" else retention.load_retention_prompts(self.spec.path)
        prompts = [prompts[i] for i in select_subset(len(prompts), self.spec.limit, self.ctx.evaluate.seed)]
        base_model, base_tokenizer = self.ctx.base_model()
        reference = retention.RetentionReference.build(
            base_model, base_tokenizer, prompts, max_new_tokens=self.spec.max_new_tokens,
            batch_size=self.spec.batch_size, progress=self.ctx.progress,
        )
        reference.save(path)
        return reference

    def _heldout_prompts(self) -> list[dict[str, str]]:
        """The task's held-out prompts (what the model sees before the answer), one per record."""
        path = self.ctx.run_dir.heldout
        if not path.exists():
            raise DataError(f"{path}: the held-out split is missing; suite {self.name!r} (prompts: heldout) "
                            "needs it: run `curatune train` first")
        records = frame_to_records(pd.read_parquet(path))
        prompts = [{"id": r.id, "category": r.category or "", "prompt": r.prompt} for r in records if r.prompt.strip()]
        if not prompts:
            raise DataError(f"{path}: no held-out record has a prompt")
        return prompts

    def fingerprint(self) -> dict[str, Any]:
        m = self.ctx.config.model
        if self.spec.prompts == "heldout":
            data = data_digest(str(self.ctx.run_dir.heldout))
        else:
            data = data_digest(self.spec.path) if self.spec.path else "packaged"
        parts = {**super().fingerprint(), "base": m.base, "dtype": m.dtype, "prompts": data}
        if self.spec.prompts == "general":
            # Runs scored before the `prompts` key existed keep their fingerprint (and their scores).
            parts["suite"].pop("prompts", None)
        return parts

    def score(self, model: Any, tokenizer: Any, label: str) -> SuiteScore:
        result = retention.retention_scores(
            model, tokenizer, self.items, batch_size=self.spec.batch_size,
            generate=self.spec.answer_agreement, progress=self.ctx.progress,
        )
        return _from_result(result, f"retention|reference:base={self.ctx.config.model.base}"
                                    f"|max_new_tokens:{self.spec.max_new_tokens}")


class LmEvalTask(Suite):
    """An lm-evaluation-harness task (registry name or local YAML), scored by lm-eval itself."""

    kind = "lm_eval"

    def __init__(self, spec: Any, ctx: EvalContext):
        super().__init__(spec, ctx)
        lmeval_tasks.import_lm_eval(spec.name)  # a missing lm-eval stops the run before any model loads

    def _load(self) -> lmeval_tasks.LoadedTasks:
        loaded = lmeval_tasks.load_tasks(self.spec)
        seed = self.ctx.evaluate.seed
        loaded.doc_ids = {leaf: select_subset(n, self.spec.limit, seed) for leaf, n in loaded.n_docs.items()}
        if not any(loaded.doc_ids.values()):
            raise DataError(f"suite {self.name}: lm-eval task {loaded.name!r} has no documents to score")
        return loaded

    def fingerprint(self) -> dict[str, Any]:
        return {**super().fingerprint(), **lmeval_tasks.task_fingerprint(self.items)}

    def score(self, model: Any, tokenizer: Any, label: str) -> SuiteScore:
        run = lmeval_tasks.run_tasks(model, tokenizer, self.spec, self.items, progress=self.ctx.progress)
        frame = samples_frame(run.per_item)
        return SuiteScore(run.metrics, run.n_items, frame, {m: run.signature for m in run.metrics}, run.notes)


SUITE_KINDS: dict[str, type[Suite]] = {
    cls.kind: cls
    for cls in (GenerationTask, MultipleChoiceTask, PerplexityTask, LambadaTask, RetentionProbe, LmEvalTask)
}


def build_suites(ctx: EvalContext) -> list[Suite]:
    """The configured suites (or the defaults), each bound to its scorer."""
    return [SUITE_KINDS[spec.kind](spec, ctx) for spec in ctx.evaluate.effective_suites()]


def fingerprint_digest(parts: dict[str, Any]) -> str:
    text = json.dumps(parts, sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha1(text.encode()).hexdigest()[:16]


def _chat_identity(train: Any) -> dict[str, Any]:
    """train.chat_template (by hash) and train.system_prompt when set: they change every prompt."""
    chat = ChatSettings.from_train(train)
    out: dict[str, Any] = {}
    if chat.template:
        out["chat_template_sha1"] = hashlib.sha1(chat.template.encode("utf-8")).hexdigest()
    if chat.system_prompt:
        out["system_prompt"] = chat.system_prompt
    return out
