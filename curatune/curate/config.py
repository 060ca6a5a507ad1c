"""Configuration of the curation stage (owned by curatune.curate).

``curate.steps`` is an ordered list; each item names a step (``name``) and carries that
step's own settings. Pydantic picks the settings class from ``name`` (a discriminated
union), so a typo in a setting is reported against the right step. When the list is
empty the default pipeline of :func:`default_steps` runs.
"""
from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, field_validator

TextField = Literal["text", "prompt", "response"]
KeepPolicy = Literal["best", "first", "longest", "quality"]
Action = Literal["drop", "trim"]

#: What each quality rule does by default to a conversation whose assistant turn fails it:
#: cut the conversation before that exchange and keep the clean prefix ("trim"; a record
#: with no clean prefix, e.g. any single-turn record, is dropped).
QUALITY_DEFAULT_ACTIONS: dict[str, str] = {
    reason: "trim"
    for reason in ("empty_response", "too_short", "too_long", "refusal", "boilerplate", "echo_prompt",
                   "repetition", "symbol_ratio", "url_ratio", "truncated")
}
_KEEP_HELP = (
    "Which copy survives: 'best' (the most turns, then an untruncated last answer, then the longest "
    "conversation, then the first seen), the first seen, the one with the longest response, or the best "
    "quality score (meta.quality_score when present, else the heuristic score)."
)


class _StepConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="Set to false to skip this step.")


class ExactDedupConfig(_StepConfig):
    name: Literal["exact"] = "exact"
    field: TextField = Field(
        default="text",
        description="What is compared: the whole conversation ('text'), the prompt, or the response.",
    )
    keep: KeepPolicy = Field(default="best", description=_KEEP_HELP)
    turn_prefix: bool = Field(
        default=True,
        description="A conversation whose turns are exactly the first turns of a longer one is a duplicate of "
        "the longer one (field 'text' only): the same chat shared again before it went on.",
    )


class NearDupConfig(_StepConfig):
    name: Literal["near_dup"] = "near_dup"
    field: TextField = Field(default="text", description="What is compared (text, prompt or response).")
    ngram: int = Field(default=5, ge=1, le=32, description="Word n-gram size of the shingles.")
    num_perm: int = Field(default=128, ge=16, le=1024, description="MinHash permutations.")
    threshold: float = Field(
        default=0.7, gt=0.0, lt=1.0,
        description="Jaccard similarity above which two records are duplicates. LSH bands are "
        "tuned for it and every candidate pair is verified by its estimated Jaccard.",
    )
    response_threshold: float = Field(
        default=0.5, ge=0.0, le=1.0,
        description="With field 'text': a pair is only a duplicate when the assistant turns also agree (exact Jaccard "
        "of their shingles at least this). A long pasted document or passage otherwise makes two different "
        "requests about it, or a regenerated different answer, look like copies. 0 turns the check off.",
    )
    keep: KeepPolicy = Field(default="best", description=_KEEP_HELP)
    chain: bool = Field(
        default=False,
        description="false: a record is removed only when its own similarity to the record kept for it is at "
        "least the threshold (members of a chained cluster that are not close to its kept record are kept, "
        "or removed against another kept member they are close to). true: every record connected to the kept "
        "one through a chain of close pairs is removed (plain union-find; on GPTeacher Toolformer 59% of such "
        "removals were below 0.7 to the kept record, down to 0.35); a warning says how many.",
    )
    seed: int = Field(default=1, description="Seed of the MinHash permutations.")
    max_bucket_compare: int = Field(
        default=200, ge=2,
        description="Inside one LSH bucket, compare each record with at most this many cluster "
        "leaders (bounds the cost of huge buckets of templated text).",
    )


class SemanticDedupConfig(_StepConfig):
    """SemDeDup for instruction data: what distinguishes a record is embedded, not its template.

    Defaults measured on the demo's planted paraphrases and on T0 (self_instruct); see
    docs/curate.md and bench/results/curate_semantic.md.
    """

    name: Literal["semantic"] = "semantic"
    field: Literal["prompt_and_response", "text", "prompt", "response"] = Field(
        default="prompt_and_response",
        description="prompt_and_response: embed the prompt and the response separately and require both to "
        "match (two items of one template that differ in their answer are not duplicates); text, prompt or "
        "response: embed only that text and compare it against 'threshold'.",
    )
    threshold: float = Field(
        default=0.95, gt=0.0, le=1.0,
        description="Cosine of the prompts (template removed) at which two records are duplicates when their "
        "answers carry no evidence: the same short or templated answer ('Yes', 'positive', 'B'); the numbers "
        "in both prompts must then agree too. With field text/prompt/response: the cosine of that text.",
    )
    prompt_threshold: float = Field(
        default=0.6, gt=0.0, le=1.0,
        description="Cosine of the prompts (template removed) that suffices when both answers are informative "
        "(at least informative_words words of non-template text) and agree (response_threshold, same numbers): "
        "a reworded request with the same substantial answer is a duplicate.",
    )
    response_threshold: float = Field(
        default=0.98, gt=0.0, le=1.0,
        description="Cosine of the responses (template removed) at which two answers agree (prompt_and_response). "
        "0.98 means nearly the same answer; lower it to also catch reworded answers, at a cost in precision "
        "(demo: 0.95 -> precision 0.84).",
    )
    informative_words: int = Field(
        default=6, ge=1,
        description="An answer with at least this many words of non-template text is informative: agreeing "
        "on it is evidence. Shorter answers ('Paris', 'Yes') agree by chance, so their prompts must reach "
        "'threshold'.",
    )
    numbers_must_match: bool = Field(
        default=True,
        description="Require the same numbers in both responses (and in both prompts when the answers are not "
        "informative). Embeddings barely see numbers: two listings that differ only in price score 0.997.",
    )
    strip_templates: bool = Field(
        default=True,
        description="Before embedding, drop lines and sentences that occur in many records (instructions, field "
        "labels like 'Question:', stock answers): they dominate the embedding but say nothing about the item.",
    )
    template_min_fraction: float = Field(
        default=0.001, ge=0.0, le=1.0,
        description="A line or sentence in at least this fraction of the records is template (0.1%: a template "
        "shared by 1 of 300 tasks still counts)...",
    )
    template_min_records: int = Field(
        default=10, ge=2,
        description="...and in at least this many records (small datasets keep content a few records share).",
    )
    clusters: int | None = Field(
        default=None, ge=1,
        description="k-means clusters that duplicate pairs are searched in (pairs split across clusters are "
        "missed). Default: 1, an exact all-pairs search, up to 50,000 records; sqrt(records/2) above.",
    )
    keep: KeepPolicy = Field(default="first", description="Which record of a duplicate group survives.")
    max_seq_length: int = Field(
        default=128, ge=8,
        description="Tokens embedded per text (MiniLM was trained on 128; longer costs time for little change).",
    )
    batch_size: int = Field(default=64, ge=1, description="Embedding batch size.")
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        default="auto",
        description="Embedding precision: auto = bfloat16 where the hardware computes it natively (AVX512-BF16/AMX "
        "CPUs, recent GPUs; ~3x faster on CPU, cosine >= 0.998 to float32), else float32.",
    )
    seed: int = Field(default=0, description="k-means seed.")
    embedding: Literal["transformer", "static"] = Field(
        default="transformer",
        description="transformer: run the sentence embedder (model.embedder, MiniLM by default) on every text. "
        "static: a token table distilled once from that embedder (model2vec; offline, cached in cache_dir/static), "
        "each text the mean of its token vectors: 7.5x less CPU on 26k T0 records, ~100x on a 1k sample; trade-off in docs/curate.md.",
    )
    static_dims: int = Field(
        default=256, ge=8,
        description="Dimensions of the distilled static table (PCA of the embedder's token outputs).",
    )


class QualityConfig(_StepConfig):
    """Checks run on every assistant turn; the first failing turn decides (see ``actions``)."""

    name: Literal["quality"] = "quality"
    actions: dict[str, Action] = Field(
        default_factory=dict,
        description="Per reason, 'trim' (cut the conversation before the first failing exchange and keep the clean "
        "prefix when it still holds a user and an assistant turn, else drop) or 'drop' (remove the record). "
        "Default: trim for every quality reason (empty_response, too_short, too_long, refusal, boilerplate, "
        "echo_prompt, repetition, symbol_ratio, url_ratio, truncated); e.g. {refusal: drop}.",
    )
    min_response_chars: int = Field(default=1, ge=0, description="Assistant turns shorter than this (stripped) fail as too_short; empty ones as empty_response.")
    min_response_words: int = Field(default=1, ge=0, description="Assistant turns with fewer words fail as too_short.")
    max_response_chars: int = Field(default=20000, ge=1, description="Assistant turns longer than this fail as too_long.")
    max_prompt_chars: int = Field(default=50000, ge=1, description="An assistant turn whose context (every message before it) is longer than this fails as too_long.")
    echo_prompt: bool = Field(default=True, description="Flag assistant turns that merely repeat their user turn (echo_prompt).")
    echo_min_chars: int = Field(default=20, ge=1, description="Only responses at least this long can count as an echo.")
    repetition: bool = Field(default=True, description="Flag repetitive assistant turns (repetition).")
    repetition_method: Literal["degenerate", "gopher"] = Field(
        default="degenerate",
        description="'degenerate': only output that loops (a unit said min_loop_repeats+ times back to back, a block "
        "of min_block_words+ words said twice in a row, a character loop, or the same line again and again back to "
        "back outside code and tables); lists, guides, plans, code and lyrics pass. 'gopher': Gopher's web-document thresholds "
        "(max_dup_line_fraction, max_top_ngram_fraction, max_dup_ngram_fraction), which flag templated chat answers.",
    )
    min_loop_repeats: int = Field(default=4, ge=2, description="degenerate: a unit of words repeated back to back this many times is a loop...")
    min_loop_words: int = Field(default=30, ge=2, description="...when the repeats cover at least this many words.")
    min_block_words: int = Field(default=40, ge=2, description="degenerate: a run of at least this many words said twice in a row is a repeated block.")
    min_line_repeats: int = Field(default=5, ge=2, description="degenerate: a line of 2+ words (outside code and tables) repeated this many times back to back.")
    max_dup_line_fraction: float = Field(default=0.30, ge=0, le=1, description="gopher: max fraction of lines that are duplicates.")
    max_top_ngram_fraction: dict[int, float] = Field(
        default={2: 0.20, 3: 0.18, 4: 0.16},
        description="gopher: max fraction of characters covered by the most frequent word n-gram, per n.",
    )
    max_dup_ngram_fraction: dict[int, float] = Field(
        default={5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10},
        description="gopher: max fraction of characters in duplicated word n-grams, per n.",
    )
    repetition_min_words: int = Field(default=30, ge=1, description="Responses shorter than this skip the repetition filter.")
    top_ngram_min_words: int = Field(
        default=100, ge=1,
        description="gopher: responses shorter than this skip the top-n-gram check and get twice the duplicated-n-gram "
        "tolerance: in short answers a repeated name or phrase is normal (Gopher tuned them on web documents).",
    )
    max_symbol_ratio: float = Field(
        default=0.5, ge=0, le=1,
        description="Max fraction of characters that are neither letters, digits nor whitespace (symbol_ratio). "
        "JSON stays well below the default; code and single tokens (a regex) are not checked.",
    )
    symbol_min_chars: int = Field(default=20, ge=1, description="Responses shorter than this skip the symbol filter.")
    max_url_ratio: float = Field(default=0.5, ge=0, le=1, description="Max fraction of response characters inside URLs (url_ratio); only responses with 3 or more distinct URLs are checked.")
    url_allow_requested: bool = Field(default=True, description="url_ratio: never flag an answer whose user turn asks for links, sources, references, resources or websites.")
    url_allow_citations: bool = Field(default=True, description="url_ratio: never flag an answer whose URLs are mostly citations (markdown links, numbered references, source lists).")
    boilerplate: bool = Field(default=True, description="Flag refusals and AI boilerplate ('As an AI language model...').")
    refusal_help_words: int = Field(
        default=80, ge=0,
        description="A turn that opens with a refusal but then turns to helping ('However, here is ...') with at least "
        "this many more words is a hedge before an answer, not a refusal (0: every opening refusal counts).",
    )
    extra_boilerplate_patterns: list[str] = Field(default_factory=list, description="More regular expressions treated as boilerplate (case-insensitive).")
    truncation: bool = Field(
        default=True,
        description="Flag assistant turns cut off mid-sentence or inside an open code block / JSON value. "
        "Valid JSON, code, lists, short answers and a closing horizontal rule (---) are never flagged.",
    )
    truncation_min_words: int = Field(default=12, ge=1, description="Prose responses shorter than this are never flagged as truncated.")

    @field_validator("actions")
    @classmethod
    def _known_reasons(cls, value: dict[str, str]) -> dict[str, str]:
        unknown = sorted(set(value) - set(QUALITY_DEFAULT_ACTIONS))
        if unknown:
            raise ValueError(f"unknown reason(s) {', '.join(unknown)}; choose from {', '.join(QUALITY_DEFAULT_ACTIONS)}")
        return value


class LanguageConfig(_StepConfig):
    """Language ID on the prose of the whole conversation (code, URLs, blobs and numbers stripped)."""

    name: Literal["language"] = "language"
    languages: list[str] = Field(default_factory=lambda: ["en"], description="ISO 639-1 codes to keep (empty list keeps every language).")
    field: TextField = Field(default="text", description="What is identified: the whole conversation (text), the prompt, or the last response.")
    min_confidence: float = Field(
        default=0.7, ge=0, le=1,
        description="A record is a suspect only when the language-ID probability of a non-target language is at least this...",
    )
    min_margin: float = Field(
        default=0.5, ge=0, le=1,
        description="...and exceeds the probability of the most likely target language by at least this. A suspect is "
        "removed when both its user turns and its assistant turns are, weighted by letters, mostly not in a target language.",
    )
    min_chars: int = Field(default=20, ge=0, description="Conversations (and, when confirming, messages) with fewer letters of prose are kept (too short to identify).")


class ModelScoreConfig(_StepConfig):
    name: Literal["model_score"] = "model_score"
    enabled: bool = Field(default=True, description="Set to false to skip this step.")
    score: Literal["perplexity", "ifd"] = Field(
        default="ifd",
        description="'perplexity' keeps the responses the model finds most likely; 'ifd' (instruction-following "
        "difficulty, Cherry LLM) keeps records whose prompt helps the model least, i.e. the hardest to follow.",
    )
    model: str | None = Field(default=None, description="Causal LM to score with; default: model.base.")
    keep_top_fraction: float = Field(default=0.8, gt=0, le=1, description="Fraction of records kept (best scores).")
    max_length: int = Field(default=512, ge=8, description="Tokens per record scored (longer are truncated).")
    batch_size: int = Field(default=8, ge=1, description="Records per forward pass.")


class DecontaminateConfig(_StepConfig):
    name: Literal["decontaminate"] = "decontaminate"
    ngram: int = Field(default=8, ge=2, le=50, description="Word n-gram size (13 in GPT-3; 8 suits short instruction data).")
    min_overlap: float = Field(
        default=0.5, gt=0, le=1,
        description="Remove a training record when this fraction of the shorter side's n-grams (the record's or "
        "an evaluation item's) is shared with one evaluation item.",
    )
    min_shared_ngrams: int = Field(
        default=2, ge=1,
        description="...and at least this many shared n-grams: one shared 8-gram is often a stock phrase "
        "('question which of the following is not a').",
    )
    min_words: int = Field(
        default=8, ge=1,
        description="Evaluation texts with fewer words are ignored. Set it below ngram to match shorter texts "
        "as whole phrases (risky: short phrases like 'the planets rotate around the sun' are common).",
    )
    extra_paths: list[str] = Field(
        default_factory=list,
        description="More evaluation files (JSONL/JSON/text) to decontaminate against, besides data.eval_sources "
        "and evaluate.suites[].path.",
    )


class BalanceConfig(_StepConfig):
    name: Literal["balance"] = "balance"
    enabled: bool = Field(default=True, description="Set to false to skip this step.")
    by: Literal["auto", "category", "cluster"] = Field(
        default="auto",
        description="Groups: the category field, k-means clusters of embeddings, or auto (category when "
        "most records have one, else clusters).",
    )
    clusters: int = Field(default=20, ge=1, description="k-means clusters when grouping by embeddings.")
    strategy: Literal["cap", "uniform", "temperature"] = Field(
        default="temperature",
        description="cap: at most max_per_group per group; uniform: equal share per group; temperature: "
        "group share proportional to size**temperature (0.5 = sqrt sampling).",
    )
    max_per_group: int | None = Field(default=None, ge=1, description="Cap per group (strategy cap; also applied on top of the others).")
    temperature: float = Field(default=0.5, ge=0, le=1, description="Exponent of the group sizes (strategy temperature).")
    target_size: int | None = Field(
        default=None, ge=1,
        description="Records to keep in total; default for uniform/temperature: the largest size at which no "
        "group needs more than it has.",
    )
    seed: int = Field(default=0, description="Sampling seed.")


#: Every curation step's config, in the order the docs list them. A step's name (its
#: ``name`` field) is the one spelling used by configs, step classes and the ledger.
STEP_CONFIGS = (
    ExactDedupConfig,
    NearDupConfig,
    SemanticDedupConfig,
    QualityConfig,
    LanguageConfig,
    ModelScoreConfig,
    DecontaminateConfig,
    BalanceConfig,
)
STEP_NAMES = tuple(c.model_fields["name"].default for c in STEP_CONFIGS)
StepConfig = Annotated[Union[STEP_CONFIGS], Field(discriminator="name")]


#: The default pipeline, in order.
DEFAULT_STEPS = (QualityConfig, LanguageConfig, ExactDedupConfig, NearDupConfig, DecontaminateConfig)


def default_steps() -> list:
    """The pipeline that runs when ``curate.steps`` is empty.

    Quality and language first: quality trims conversations, and a trimmed conversation
    can become a duplicate (or a turn-prefix) of another, which the dedup steps after it
    then see. Semantic dedup, model scoring and balancing change what the data *is* (not
    just remove junk), so they are opt-in.
    """
    return [config() for config in DEFAULT_STEPS]


class CurateConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    steps: list[StepConfig] = Field(
        default_factory=list,
        description=f"Ordered curation steps; each an object with a 'name' ({', '.join(STEP_NAMES)}) and its "
        "settings. Empty: the default pipeline "
        f"{', '.join(c.model_fields['name'].default for c in DEFAULT_STEPS)} (see docs/curate.md).",
    )
    workers: int = Field(default=2, ge=1, description="Processes for steps that map over records (MinHash, n-grams).")
    cache_dir: str | None = Field(
        default=None,
        description="Embedding cache folder (relative to the config's folder); default $CURATUNE_CACHE, else ~/.cache/curatune.",
    )
    progress: bool = Field(default=True, description="Show progress bars.")

    @field_validator("steps", mode="before")
    @classmethod
    def _names_known(cls, value):
        # Name the unknown step plainly instead of pydantic's union error.
        if isinstance(value, list):
            for i, item in enumerate(value):
                if isinstance(item, dict) and item.get("name") not in STEP_NAMES:
                    raise ValueError(
                        f"steps[{i}].name = {item.get('name')!r}: unknown step; choose one of {', '.join(STEP_NAMES)}"
                    )
        return value

    def effective_steps(self) -> list:
        """The configured steps, or the default pipeline when none are listed."""
        return list(self.steps) if self.steps else default_steps()
