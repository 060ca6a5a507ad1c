"""One experiment config: a YAML file validated by typed models.

Each stage owns its section (``curatune/<stage>/config.py``); this module composes them,
loads YAML safely, applies ``--set key.path=value`` overrides from the CLI, turns
validation errors into one line per problem (key, bad value, what is allowed), and
renders the complete commented defaults for ``curatune config --defaults``.
"""
from __future__ import annotations

import difflib
import os
import string
import textwrap
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from curatune.classify.config import ClassifyConfig
from curatune.curate.config import CurateConfig
from curatune.errors import ConfigError
from curatune.evaluate.config import EvaluateConfig
from curatune.safe_yaml import YamlSyntaxError, load_user_yaml, read_user_yaml_file
from curatune.train.config import TrainConfig, is_template_text
from curatune.train.merge_config import MergeConfig

FORMATS = ("auto", "alpaca", "dolly", "prompt_completion", "sharegpt", "openai", "gpteacher", "parallel")

#: Default prompt of ``format: parallel`` (aligned sentence files -> translation records).
PARALLEL_INSTRUCTION = "Translate the following {source_lang} text into {target_lang}.\n\n{source}"
#: Placeholders a ``format: parallel`` instruction template may use.
PARALLEL_PLACEHOLDERS = ("source", "source_lang", "target_lang")


class SourceConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    path: str = Field(
        description="A file (.jsonl .json .csv .tsv .parquet), a folder of them, a glob, "
        "or hf:org/name[:config][@split] for a Hugging Face dataset. With format: parallel, the "
        "source-language text file (one sentence per line, optionally .gz/.bz2/.xz)."
    )
    format: Literal[FORMATS] = Field(  # type: ignore[valid-type]
        default="auto",
        description="Record format; 'auto' detects it from the fields. 'parallel' reads two aligned "
        "plain-text files (path + target_path) into translation records.",
    )
    mapping: dict[str, str] = Field(
        default_factory=dict,
        description="Explicit field mapping that overrides detection, e.g. "
        "{instruction: question, output: answer}. Keys: system, instruction, input, output, "
        "messages, conversations, category.",
    )
    category: str | None = Field(
        default=None,
        description="Category for every record of this source when the data has none "
        "(use '{file}' for the file's stem).",
    )
    encoding: str | None = Field(
        default=None, description="Text encoding; detected (utf-8, then cp1252) when unset."
    )
    # ---- format: parallel (aligned sentence files, e.g. machine-translation corpora)
    target_path: str | None = Field(
        default=None,
        description="format: parallel only: the target-language file aligned line by line with path "
        "(its line i translates line i of path).",
    )
    source_lang: str | None = Field(
        default=None,
        description="format: parallel only: source language name or code (de -> German); guessed "
        "from path's suffix (train.en.gz -> English) when unset.",
    )
    target_lang: str | None = Field(
        default=None,
        description="format: parallel only: target language name or code; guessed from target_path's suffix when unset.",
    )
    instruction: str | None = Field(
        default=None,
        description="format: parallel only: the user turn, a template with {source} (the sentence), "
        "{source_lang} and {target_lang}; write {{ and }} for literal braces. Empty = 'Translate the "
        "following {source_lang} text into {target_lang}.' + a blank line + {source}.",
    )

    @field_validator("instruction")
    @classmethod
    def _instruction_template(cls, template: str | None) -> str | None:
        if template is None:
            return None
        try:
            names = [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]
        except ValueError as exc:
            raise ValueError(f"not a valid template ({exc}); write {{{{ and }}}} for literal braces") from None
        unknown = sorted(set(names) - set(PARALLEL_PLACEHOLDERS))
        if unknown:
            raise ValueError(
                f"unknown placeholder(s) {', '.join('{' + n + '}' for n in unknown)}; "
                f"allowed: {', '.join('{' + n + '}' for n in PARALLEL_PLACEHOLDERS)}"
            )
        if "source" not in names:
            raise ValueError("the template must contain {source} (where the sentence to translate goes)")
        return template

    @model_validator(mode="after")
    def _parallel_fields(self) -> "SourceConfig":
        parallel_only = [
            name for name in ("target_path", "source_lang", "target_lang", "instruction")
            if getattr(self, name) is not None
        ]
        if self.format == "parallel":
            if not self.target_path:
                raise ValueError("format: parallel needs target_path (the aligned target-language file)")
            if self.mapping:
                raise ValueError("mapping does not apply to format: parallel (plain-text lines have no fields)")
            if self.path.startswith("hf:"):
                raise ValueError("format: parallel reads local text files, not hf: datasets")
        elif parallel_only:
            verb = "applies" if len(parallel_only) == 1 else "apply"
            raise ValueError(f"{', '.join(parallel_only)} {verb} only with format: parallel")
        return self

    def parallel_instruction(self) -> str:
        """The instruction template of a format: parallel source (the default when unset)."""
        return self.instruction or PARALLEL_INSTRUCTION


class DataConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sources: list[SourceConfig] = Field(
        default_factory=list, description="Training data: one or more sources."
    )
    eval_sources: list[SourceConfig] = Field(
        default_factory=list,
        description="Held-out target-task data. When empty, heldout_size records are carved "
        "from the curated data before any subset is drawn.",
    )
    heldout_size: int = Field(
        default=200, ge=0, description="Records carved for the held-out split when eval_sources is empty."
    )
    labels: str | None = Field(
        default=None,
        description="Optional labels file of planted flaws (as written by the demo generator); "
        "curation then reports precision and recall per flaw type.",
    )


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base: str = Field(
        default="default",
        description="Base model: 'default' (embedded SmolLM2-135M-Instruct), a Hugging Face "
        "hub id, or a local model directory.",
    )
    embedder: str = Field(
        default="default",
        description="Sentence embedder: 'default' (embedded all-MiniLM-L6-v2), a hub id, or a local directory.",
    )
    trust_remote_code: bool = Field(
        default=False, description="Run model code shipped with a hub repository. Off unless you trust it."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto", description="Weights dtype; 'auto' = bfloat16 on a GPU that supports it, else float32."
    )
    device: str = Field(default="auto", description="'auto', 'cpu', 'cuda', 'cuda:1', ...")


class ExperimentConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(default="experiment", description="A name shown in reports and the app.")
    task: Literal["generation", "classification"] = Field(
        default="generation",
        description="generation: fine-tune a language model on instruction data (curate, sweep, evaluate). "
        "classification: few-shot text classification with SetFit on the sentence embedder (the classify "
        "section; see docs/classification.md).",
    )
    run_dir: str = Field(default="runs/experiment", description="Where every stage writes (see README).")
    model: ModelConfig = Field(default_factory=ModelConfig)
    data: DataConfig = Field(default_factory=DataConfig)
    curate: CurateConfig = Field(default_factory=CurateConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    evaluate: EvaluateConfig = Field(default_factory=EvaluateConfig)
    merge: MergeConfig = Field(default_factory=MergeConfig)
    classify: ClassifyConfig = Field(default_factory=ClassifyConfig)

    def resolved(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


# ----------------------------------------------------------------------------- loading


def load_config(path: str | os.PathLike | None = None, overrides: list[str] | None = None) -> ExperimentConfig:
    """Load a YAML config (or the defaults when ``path`` is None) and apply overrides.

    Relative data paths in the file are resolved against the file's folder, so a config
    works from any working directory.
    """
    raw: dict[str, Any] = {}
    where = "defaults"
    if path is not None:
        path = Path(path)
        where = str(path)
        if not path.exists():
            raise ConfigError(f"{path}: config file not found")
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{path}: cannot read the config file ({exc.strerror or exc})") from None
        raw = read_user_yaml_file(str(path), data) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(raw).__name__}")
        _resolve_relative_paths(raw, path.parent)
    for override in overrides or []:
        apply_override(raw, override)
    return validate_config(raw, where)


def validate_config(raw: dict[str, Any], where: str = "config") -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, where)) from None


def format_validation_error(exc: ValidationError, where: str) -> str:
    lines = [f"{where}: invalid config"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"])
        value = err.get("input")
        shown = repr(value) if not isinstance(value, dict) else "{...}"
        if len(shown) > 80:
            shown = shown[:77] + "..."
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            guess = likely_key(err["loc"])
            hint = f"did you mean {guess!r}? " if guess else "check the spelling; "
            lines.append(f"  {key}: unknown key ({hint}`curatune config --defaults` lists every key)")
            continue
        lines.append(f"  {key} = {shown}: {message}")
    return "\n".join(lines)


#: Names people carry over from other tools, mapped to ours (difflib alone cannot see rank -> r).
KEY_SYNONYMS = {
    "rank": "r", "lora_r": "r", "lora_alpha": "alpha", "lora_dropout": "dropout", "lr": "learning_rate",
    "model": "base", "model_name": "base", "base_model": "base", "batch_size": "per_device_batch_size",
    "num_epochs": "epochs", "num_train_epochs": "epochs", "max_steps": "steps", "max_length": "max_seq_length",
    "output_dir": "run_dir", "out": "run_dir", "data_files": "sources", "file": "path",
}


def likely_key(loc: tuple) -> str | None:
    """The key a misspelt one at ``loc`` probably meant (``train.lora.rank`` -> ``r``), or None."""
    wrong = str(loc[-1])
    allowed = _keys_at(loc[:-1])
    if KEY_SYNONYMS.get(wrong) in allowed:
        return KEY_SYNONYMS[wrong]
    close = difflib.get_close_matches(wrong, sorted(allowed), n=1, cutoff=0.6)
    return close[0] if close else None


def _keys_at(loc: tuple) -> set[str]:
    """Field names of the config models found at ``loc`` (list indices and union tags skipped)."""
    models: list[type[BaseModel]] = [ExperimentConfig]
    for part in loc:
        if isinstance(part, int):
            continue
        with_field = [m for m in models if part in m.model_fields]
        if with_field:
            models = [sub for m in with_field for sub in _models_in(m.model_fields[part].annotation)]
        # else: a discriminated union's tag (e.g. the suite kind) names the branch; keep the candidates
    return {name for m in models for name in m.model_fields}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_in(arg)]


def apply_override(raw: dict[str, Any], override: str) -> None:
    """Apply ``a.b.c=value`` (value parsed as YAML) to a nested dict in place.

    A numeric part indexes a list that is already there: ``curate.steps.1.enabled=false``.
    """
    if "=" not in override:
        raise ConfigError(f"--set {override!r}: expected key.path=value")
    key, _, text = override.partition("=")
    try:
        value = load_user_yaml(text, f"--set {key.strip()}")
    except YamlSyntaxError:
        value = text  # not YAML: the value is the plain text (an alias bomb or a huge number still raises)
    node: Any = raw
    parts = key.strip().split(".")
    for i, part in enumerate(parts):
        last = i == len(parts) - 1
        where = ".".join(parts[: i + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"--set {override!r}: {where} is not an index of the list (it has {len(node)} items)"
                )
            if last:
                node[int(part)] = value
            else:
                node = node[int(part)]
            continue
        if not isinstance(node, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parts[:i])} is not a mapping or list")
        if last:
            node[part] = value
        else:
            if node.get(part) is None:
                node[part] = {}
            node = node[part]


def _resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    data = raw.get("data")
    if isinstance(data, dict):
        for key in ("sources", "eval_sources"):
            for source in data.get(key) or []:
                if isinstance(source, dict):
                    for path_key in ("path", "target_path"):
                        if isinstance(source.get(path_key), str):
                            source[path_key] = _resolve(source[path_key], base)
        if isinstance(data.get("labels"), str):
            data["labels"] = _resolve(data["labels"], base)
    if isinstance(raw.get("run_dir"), str):
        raw["run_dir"] = _resolve(raw["run_dir"], base)
    train = raw.get("train")
    if isinstance(train, dict) and isinstance(train.get("chat_template"), str) and train["chat_template"].strip() \
            and not is_template_text(train["chat_template"]):
        train["chat_template"] = _resolve(train["chat_template"], base)  # a file path, not the template itself
    launch = (raw.get("train") or {}).get("launch") if isinstance(raw.get("train"), dict) else None
    if isinstance(launch, dict) and isinstance(launch.get("accelerate_config"), str):
        launch["accelerate_config"] = _resolve(launch["accelerate_config"], base)
    evaluate = raw.get("evaluate")
    if isinstance(evaluate, dict):
        for suite in evaluate.get("suites") or []:
            if isinstance(suite, dict) and isinstance(suite.get("path"), str):
                suite["path"] = _resolve(suite["path"], base)
    model = raw.get("model")
    if isinstance(model, dict):
        for key in ("base", "embedder"):
            if isinstance(model.get(key), str):
                model[key] = _resolve_model_name(model[key], base)
    curate = raw.get("curate")
    if isinstance(curate, dict) and isinstance(curate.get("cache_dir"), str):
        curate["cache_dir"] = _resolve(curate["cache_dir"], base)


def resolve_relative_paths(raw: dict[str, Any], base: Path) -> None:
    """Make every relative path of a raw config absolute against ``base`` (in place): the config's
    folder for a file, the working directory for settings given on the command line."""
    _resolve_relative_paths(raw, base)


def _resolve(path: str, base: Path) -> str:
    if path.startswith("hf:") or os.path.isabs(path) or path.startswith("~"):
        return os.path.expanduser(path)
    return str((base / path).resolve())


def _resolve_model_name(name: str, base: Path) -> str:
    """A model given as a path resolves against ``base`` like every other path; 'default' and hub ids
    (org/name) stay as they are unless a folder of that name sits next to the config."""
    if name.strip() == "default" or not name.strip():
        return name
    if os.path.isabs(name) or name.startswith("~"):
        return os.path.expanduser(name)
    local = base / name
    looks_like_path = name.startswith(".") or "\\" in name or name.count("/") > 1
    if local.exists() or looks_like_path:
        return str(local.resolve())
    return name


# ----------------------------------------------------------------------------- defaults


def defaults_yaml() -> str:
    """The complete default config as YAML, each key with its description as a comment."""
    header = (
        "# curatune experiment config: every key with its default.\n"
        "# Validate with `curatune config check FILE`; override any key on the command line\n"
        "# with --set key.path=value (e.g. --set train.sizes=[100,200]).\n"
    )
    return header + _render_model(ExperimentConfig(), indent=0)


def _render_model(model: BaseModel, indent: int) -> str:
    pad = "  " * indent
    out = []
    for name, field in type(model).model_fields.items():
        value = getattr(model, name)
        if field.description:
            for line in _wrap(field.description, 88 - len(pad) - 2):
                out.append(f"{pad}# {line}")
        allowed = _allowed_values(field.annotation)
        if allowed:
            out.append(f"{pad}# allowed: {', '.join(allowed)}")
        if isinstance(value, BaseModel):
            out.append(f"{pad}{name}:")
            out.append(_render_model(value, indent + 1))
        else:
            dumped = _jsonable(value)
            if isinstance(dumped, (list, dict)) and dumped:
                text = yaml.safe_dump({name: dumped}, sort_keys=False, default_flow_style=False, width=88)
                out.extend(pad + line for line in text.rstrip("\n").split("\n"))
            else:
                scalar = yaml.safe_dump(dumped, default_flow_style=True).strip()
                scalar = scalar.removesuffix("\n...").removesuffix("...").strip()
                out.append(f"{pad}{name}: {scalar}")
    return "\n".join(out)


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, list):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {k: _jsonable(v) for k, v in value.items()}
    return value


def _allowed_values(annotation: Any) -> list[str]:
    if typing.get_origin(annotation) is Literal:
        return [str(a) for a in typing.get_args(annotation)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        allowed: list[str] = []
        for arg in typing.get_args(annotation):
            allowed += _allowed_values(arg)
        return allowed
    return []


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width=max(width, 40)) or [""]
