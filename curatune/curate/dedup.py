"""Deduplication steps: exact (normalized text), near (MinHash + LSH) and semantic (SemDeDup)."""
from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from curatune.curate.base import (
    DROP,
    CurateContext,
    Removal,
    Rule,
    Step,
    StepResult,
    chunked,
    text_of,
)
from curatune.curate.config import ExactDedupConfig, NearDupConfig, SemanticDedupConfig
from curatune.curate.embeddings import embed_texts, kmeans_labels, resolve_dtype
from curatune.curate.minhash import (
    _sign_chunk,
    connected_clusters,
    lsh_params,
    verified_pairs,
)
from curatune.curate.near_clusters import assign_representatives, similarity_report
from curatune.curate.parallel import effective_workers, parallel_imap
from curatune.curate.quality import heuristic_quality, truncation_reason
from curatune.curate.static_embeddings import embed_static
from curatune.curate.template_text import TemplateStripper, numbers
from curatune.curate.text import ngram_hashes, normalize, sorted_jaccard, words
from curatune.models import pick_device
from curatune.records import Record, message_text

logger = logging.getLogger(__name__)


def keep_order(records: Sequence[Record], policy: str) -> np.ndarray:
    """A preference rank per record (lower is kept first) for a keep policy.

    best: most turns, then a last answer that is not cut off, then the longest
    conversation, then input order. first: input order. longest: longest response, then
    input order. quality: ``meta.quality_score`` when numeric, else the heuristic score
    of the quality step.
    """
    n = len(records)
    position = np.arange(n, dtype=np.float64)
    if policy == "best":
        turns = np.array([len(r.messages) for r in records], dtype=np.float64)
        cut_off = np.array([truncation_reason(r.response) is not None for r in records], dtype=np.float64)
        length = np.array([sum(len(m["content"]) for m in r.messages) for r in records], dtype=np.float64)
        order = np.lexsort((position, -length, cut_off, -turns))
        rank = np.empty(n, dtype=np.int64)
        rank[order] = np.arange(n)
        return rank
    if policy == "first":
        primary = np.zeros(n)
    elif policy == "longest":
        primary = -np.array([len(r.response.strip()) for r in records], dtype=np.float64)
    elif policy == "quality":
        primary = -np.array([_quality_score(r, heuristic_quality) for r in records], dtype=np.float64)
    else:  # pragma: no cover - the config validates the policy
        raise ValueError(policy)
    order = np.lexsort((position, primary))
    rank = np.empty(n, dtype=np.int64)
    rank[order] = np.arange(n)
    return rank


def _quality_score(record: Record, fallback: Callable[[Record], float]) -> float:
    value = record.meta.get("quality_score")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
        return float(value)
    return fallback(record)


def resolve_clusters(
    records: Sequence[Record],
    labels: np.ndarray,
    policy: str,
    reason: str,
    prefix: str,
    describe: Callable[[int, int], str],
) -> StepResult:
    """Keep one record per cluster label (by ``policy``); ledger the rest against it."""
    sizes = np.bincount(labels) if len(labels) else np.zeros(0, dtype=np.int64)
    # Only members of real clusters need a preference (the "best" policy reads every answer).
    shared = np.flatnonzero(sizes[labels] > 1) if len(labels) else np.zeros(0, dtype=np.int64)
    rank = np.zeros(len(records), dtype=np.int64)
    if len(shared):
        rank[shared] = keep_order([records[i] for i in shared], policy)
    # The kept member of each label: the member with the lowest rank.
    order = np.lexsort((rank, labels))
    first_of_label = np.ones(len(order), dtype=bool)
    first_of_label[1:] = labels[order][1:] != labels[order][:-1]
    keeper = {int(labels[i]): int(i) for i in order[first_of_label]}
    kept, removed = [], []
    clusters = 0
    for i, record in enumerate(records):
        label = int(labels[i])
        k = keeper[label]
        if k == i:
            kept.append(record)
            clusters += sizes[label] > 1
            continue
        removed.append(
            Removal(record, reason, describe(i, k), duplicate_of=records[k].id, cluster_id=f"{prefix}-{records[k].id}")
        )
    return StepResult(kept, removed, {"clusters": int(clusters)})


def _conversation_keys(record: Record) -> list[bytes]:
    """Hash of the normalized text of the conversation up to each assistant turn, in order.

    The last key is the key of the whole conversation: the same bytes as hashing
    ``normalize(record.text)`` (normalizing each message and joining with a space is the
    same as normalizing the messages joined by newlines), so prefixes and wholes compare.
    """
    digest = hashlib.blake2b(digest_size=16)
    keys: list[bytes] = []
    started = False
    for i, message in enumerate(record.messages):
        part = normalize(message_text(message))
        if part:
            digest.update(((" " if started else "") + part).encode("utf-8"))
            started = True
        if message["role"] == "assistant" or i == len(record.messages) - 1:
            keys.append(digest.copy().digest())
    return keys


class ExactDedup(Step):
    """Removes records whose normalized text (case, whitespace, punctuation) is identical, and
    (field text, ``turn_prefix``) conversations that are the first turns of a longer one."""

    config_class = ExactDedupConfig
    reasons = ("exact_duplicate",)
    rules = {"exact_duplicate": Rule("exact_duplicate", "record", DROP,
                                     "the same normalized text as another record, or its first turns")}

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        prefixes = cfg.turn_prefix and cfg.field == "text"
        labels_by_key: dict[bytes, int] = {}
        labels = np.empty(len(records), dtype=np.int64)
        keys_of: list[list[bytes]] = []
        with context.progress.task("exact dedup", len(records)) as task:
            for i, record in enumerate(records):
                if prefixes:
                    keys = _conversation_keys(record)
                    keys_of.append(keys)
                    key = keys[-1]
                else:
                    key = hashlib.blake2b(normalize(text_of(record, cfg.field)).encode("utf-8"), digest_size=16).digest()
                labels[i] = labels_by_key.setdefault(key, len(labels_by_key))
                if i % 5000 == 4999:
                    task.advance(5000)
            task.close()
        result = resolve_clusters(
            records, labels, cfg.keep, "exact_duplicate", "exact",
            lambda i, k: f"same normalized {cfg.field} as {records[k].id}",
        )
        if prefixes:
            result = self._remove_turn_prefixes(records, keys_of, result)
        return result

    @staticmethod
    def _remove_turn_prefixes(records: list[Record], keys_of: list[list[bytes]], result: StepResult) -> StepResult:
        """A surviving conversation that is the first turns of a longer survivor goes, as its duplicate.

        Not a union of groups: two chats that share an opening and then diverge both stay;
        only the one that *is* the opening goes (to the longest chat that starts with it).
        """
        index_of = {id(r): i for i, r in enumerate(records)}
        survivors = [index_of[id(r)] for r in result.kept]
        longest_with_prefix: dict[bytes, int] = {}
        for i in survivors:
            for key in keys_of[i][:-1]:
                best = longest_with_prefix.get(key)
                if best is None or len(records[i].messages) > len(records[best].messages):
                    longest_with_prefix[key] = i
        kept, removed = [], list(result.removed)
        for i in survivors:
            longer = longest_with_prefix.get(keys_of[i][-1])
            if longer is None or longer == i:
                kept.append(records[i])
                continue
            removed.append(Removal(
                records[i], "exact_duplicate",
                f"its {len(records[i].messages)} turns are the first turns of {records[longer].id} "
                f"({len(records[longer].messages)} turns)",
                duplicate_of=records[longer].id, cluster_id=f"exact-{records[longer].id}",
            ))
        result.counters["turn_prefixes"] = len(removed) - len(result.removed)
        return StepResult(kept, removed, result.counters)


class NearDupDedup(Step):
    """MinHash + LSH over word n-gram shingles; candidate pairs verified by estimated Jaccard."""

    config_class = NearDupConfig
    reasons = ("near_duplicate",)

    def signatures(self, records: Sequence[Record], context: CurateContext) -> np.ndarray:
        """MinHash signature of each record's text, shape (records, num_perm)."""
        cfg = self.config
        workers = effective_workers(context.workers)
        # Enough chunks to balance the workers and keep the progress bar moving.
        # (below ~2000 records one process is faster than starting a pool).
        size = max(2000, min(5000, math.ceil(len(records) / (workers * 4)) or 1))
        # Texts are built a chunk at a time as workers take them, and each chunk's signatures
        # go straight into one array: never the whole corpus' text, nor the signatures twice.
        chunks = (([text_of(r, cfg.field) for r in c], cfg.ngram, cfg.num_perm, cfg.seed) for c in chunked(records, size))
        out = np.empty((len(records), cfg.num_perm), dtype=np.uint32)
        start = 0
        with context.progress.task("near-dup: MinHash", len(records)) as task:
            for part in parallel_imap(_sign_chunk, chunks, workers, task, lambda chunk: len(chunk[0])):
                out[start : start + len(part)] = part
                start += len(part)
        return out

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        if len(records) < 2:
            return StepResult(list(records), [], {"candidates": 0, "verified_pairs": 0, "clusters": 0})
        sig = self.signatures(records, context)
        # Records with no words have the empty signature; leave them to exact dedup.
        usable = (sig != np.uint32(0xFFFFFFFF)).any(axis=1)
        bands, rows = lsh_params(cfg.threshold, cfg.num_perm)
        pairs = verified_pairs(sig, usable, bands, rows, cfg.threshold, cfg.max_bucket_compare)
        left, right = pairs.left, pairs.right
        answers_differ = 0
        if cfg.field == "text" and cfg.response_threshold > 0 and len(left):
            agree = self._answers_agree(records, left, right)
            answers_differ = int((~agree).sum())
            left, right = left[agree], right[agree]
        labels = connected_clusters(len(records), left, right)
        sizes = np.bincount(labels)
        shared = np.flatnonzero(sizes[labels] > 1)
        rank = np.zeros(len(records), dtype=np.int64)
        if len(shared):
            rank[shared] = keep_order([records[i] for i in shared], cfg.keep)
        check_answers = cfg.field == "text" and cfg.response_threshold > 0
        assignment = assign_representatives(
            sig, labels, rank, cfg.threshold, cfg.chain,
            (lambda a, b: self._answers_agree(records, a, b)) if check_answers else None,
        )
        kept, removed = [], []
        for i, record in enumerate(records):
            k = int(assignment.kept_for[i])
            if k < 0:
                kept.append(record)
                continue
            removed.append(Removal(
                record, "near_duplicate",
                f"estimated Jaccard {assignment.similarity[i]:.2f} with {records[k].id} ({cfg.ngram}-gram shingles)",
                duplicate_of=records[k].id, cluster_id=f"near-{records[k].id}",
            ))
        similarity = similarity_report(assignment.similarity, cfg.threshold)
        counters = {
            "bands": bands, "rows": rows, "candidates": int(pairs.candidates), "verified_pairs": int(len(pairs.left)),
            "pairs_with_different_answers": answers_differ,
            "clusters": len({int(k) for k in assignment.kept_for if k >= 0}),
            "connected_components": assignment.components, "split_components": assignment.split_components,
            "largest_component": assignment.largest_component, "chain": cfg.chain,
            "similarity_to_kept": similarity,
        }
        if cfg.chain and similarity["below_threshold"]:
            warning = (
                f"near_dup chain: true removed {similarity['below_threshold']} of {similarity['removed']} records whose "
                f"own similarity to the kept record is below {cfg.threshold} (down to {similarity['min']}); "
                "chain: false removes only records close to the record kept"
            )
            logger.warning(warning)
            counters["warnings"] = [warning]
        return StepResult(kept, removed, counters)

    def _answers_agree(self, records: list[Record], left: np.ndarray, right: np.ndarray) -> np.ndarray:
        """Exact Jaccard of the assistant turns' shingles >= response_threshold, per candidate pair.

        A long pasted document (or a T0 passage) dominates a conversation's shingles: two
        chats that ask different things about it, or regenerate a different answer, reach
        the text threshold without being the same conversation.
        """
        cfg = self.config
        # Sorted unique hashes per record (8 bytes a shingle; a Python set of ints took ~60).
        shingles: dict[int, np.ndarray] = {}

        def of(i: int) -> np.ndarray:
            if i not in shingles:
                answers = "\n".join(message_text(m) for m in records[i].messages if m["role"] == "assistant")
                hashes, _ = ngram_hashes([words(answers)], cfg.ngram)
                shingles[i] = np.unique(hashes)
            return shingles[i]

        return np.array([sorted_jaccard(of(a), of(b)) >= cfg.response_threshold
                         for a, b in zip(left.tolist(), right.tolist())],
                        dtype=bool)


#: Rows per block of the pair search (a block is rows x cluster members floats).
_PAIR_BLOCK_ROWS = 512
#: Up to this many records the pair search is exact (one cluster): on 26k T0 records it is
#: faster than k-means and finds 1% more pairs (k-means splits some pairs apart).
EXACT_SEARCH_MAX_RECORDS = 50_000


def default_clusters(n: int) -> int:
    """1 (exact all-pairs search) up to EXACT_SEARCH_MAX_RECORDS, else sqrt(n/2) as in SemDeDup."""
    return 1 if n <= EXACT_SEARCH_MAX_RECORDS else max(1, int(round(math.sqrt(n / 2))))


@dataclass
class SemanticViews:
    """What the semantic step embeds and checks for each record.

    ``prompts``/``responses``: the text with template segments removed (the whole text when
    nothing else is left, e.g. a record that is only a stock question). ``informative``:
    the response keeps at least ``informative_words`` words of non-template text.
    ``*_numbers``: an id per distinct set of numbers stated (equal ids = same numbers).
    """

    prompts: list[str]
    responses: list[str] | None
    informative: np.ndarray
    prompt_numbers: np.ndarray
    response_numbers: np.ndarray | None
    template_segments: dict[str, int]


def semantic_views(records: Sequence[Record], cfg: SemanticDedupConfig) -> SemanticViews:
    number_ids: dict[frozenset, int] = {}

    def distinguishing(texts: list[str], label: str, counts: dict[str, int]) -> tuple[list[str], list[str]]:
        if not cfg.strip_templates:
            return texts, texts
        stripper = TemplateStripper(cfg.template_min_fraction, cfg.template_min_records).fit(texts)
        counts[label] = stripper.template_segments
        stripped = [stripper.strip(t) for t in texts]
        return [s if s.strip() else t for s, t in zip(stripped, texts)], stripped

    def number_id(text: str) -> int:
        return number_ids.setdefault(numbers(text), len(number_ids))

    counts: dict[str, int] = {}
    if cfg.field != "prompt_and_response":
        texts, _ = distinguishing([text_of(r, cfg.field) for r in records], cfg.field, counts)
        return SemanticViews(texts, None, np.zeros(len(texts), dtype=bool),
                             np.array([number_id(t) for t in texts]), None, counts)
    prompts, _ = distinguishing([r.prompt for r in records], "prompt", counts)
    responses, stripped = distinguishing([r.response for r in records], "response", counts)
    informative = np.array([len(s.split()) >= cfg.informative_words for s in stripped], dtype=bool)
    return SemanticViews(
        prompts, responses, informative,
        np.array([number_id(t) for t in prompts]), np.array([number_id(t) for t in responses]), counts,
    )


class SemanticDedup(Step):
    """SemDeDup for instruction data: k-means on embeddings of what distinguishes each record,
    then duplicate pairs inside each cluster (see SemanticDedupConfig for the rule).

    A pair is a duplicate when its answers agree (response cosine >= response_threshold and
    the same numbers) and its prompts are close: >= prompt_threshold when both answers are
    informative, else >= threshold with the same numbers in both prompts. With field
    text/prompt/response: that text's cosine >= threshold and the same numbers.
    Records are then resolved in keep order: a record is removed when it pairs with a record
    already kept, so every removed record is a direct duplicate of its ``duplicate_of``.
    """

    config_class = SemanticDedupConfig
    reasons = ("semantic_duplicate",)

    def run(self, records: list[Record], context: CurateContext) -> StepResult:
        cfg = self.config
        if len(records) < 2:
            return StepResult(list(records), [], {"kmeans_clusters": 0, "pairs": 0})
        views = semantic_views(records, cfg)
        both = views.responses is not None
        texts = views.prompts + (views.responses or [])
        if cfg.embedding == "static":
            vectors = embed_static(texts, context, dims=cfg.static_dims, max_seq_length=cfg.max_seq_length)
        else:
            vectors = embed_texts(texts, context, max_seq_length=cfg.max_seq_length, batch_size=cfg.batch_size,
                                  dtype=cfg.dtype, description="semantic: embedding")
        n = len(records)
        prompt_vectors = vectors[:n]
        response_vectors = vectors[n:] if both else None
        # Clustered on [prompt, response] / sqrt(2): its cosine is the mean of the two cosines.
        joint = np.hstack([prompt_vectors, response_vectors]) / np.sqrt(2.0) if both else prompt_vectors
        k = min(cfg.clusters or default_clusters(n), n)
        groups = kmeans_labels(joint, k, cfg.seed)
        pairs = self._pairs(views, prompt_vectors, response_vectors, groups, k, context)
        dup_of = self._resolve(records, pairs)

        def detail(i: int, j: int) -> str:
            text = f"prompt cosine {float(prompt_vectors[i] @ prompt_vectors[j]):.3f}"
            if both:
                kind = "informative" if views.informative[i] and views.informative[j] else "short or templated"
                text += f", response cosine {float(response_vectors[i] @ response_vectors[j]):.3f} ({kind} answers)"
            return f"{text} with {records[j].id}"

        kept, removed = [], []
        for i, record in enumerate(records):
            j = int(dup_of[i])
            if j < 0:
                kept.append(record)
            else:
                removed.append(Removal(record, "semantic_duplicate", detail(i, j), duplicate_of=records[j].id,
                                       cluster_id=f"sem-{records[j].id}"))
        counters = {
            "kmeans_clusters": k, "pairs": int(len(pairs[0])), "field": cfg.field,
            "template_segments": views.template_segments, "embedded_texts": len(set(texts)),
            "embedding": cfg.embedding,
            # The static table is float32 numpy; only the transformer has a precision to report.
            "dtype": "float32" if cfg.embedding == "static" else resolve_dtype(cfg.dtype, pick_device(context.device)),
        }
        if both:
            counters["informative_responses"] = int(views.informative.sum())
        return StepResult(kept, removed, counters)

    def _pairs(self, views: SemanticViews, prompts: np.ndarray, responses: np.ndarray | None,
               groups: np.ndarray, k: int, context: CurateContext) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Verified duplicate pairs (left, right, score) inside each k-means cluster."""
        cfg = self.config
        both = responses is not None
        lowest_prompt = min(cfg.threshold, cfg.prompt_threshold) if both else cfg.threshold
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
        with context.progress.task("semantic: pairs", len(groups)) as task:
            for g in range(k):
                members = np.nonzero(groups == g)[0]
                if len(members) < 2:
                    task.advance(len(members))
                    continue
                # Blocks of rows against the members after them (members are sorted, pairs a < b):
                # memory stays ~rows x members floats.
                for start in range(0, len(members), _PAIR_BLOCK_ROWS):
                    rows, columns = members[start : start + _PAIR_BLOCK_ROWS], members[start:]
                    prompt_sim = prompts[rows] @ prompts[columns].T
                    close = prompt_sim >= lowest_prompt
                    if both:
                        # Every duplicate's answers agree, so the block's response cosines filter too:
                        # static embeddings rate most prompts of one task >= 0.6, and gathering those
                        # pairs' response vectors one by one took 45 of 70 s on 26k T0 records.
                        response_sim = responses[rows] @ responses[columns].T
                        close &= response_sim >= cfg.response_threshold
                    a_idx, b_idx = np.nonzero(close)
                    upper = rows[a_idx] < columns[b_idx]
                    a_idx, b_idx = a_idx[upper], b_idx[upper]
                    a, b, sp = rows[a_idx], columns[b_idx], prompt_sim[a_idx, b_idx]
                    sr = response_sim[a_idx, b_idx] if both else None
                    ok = self._verify(views, a, b, sp, sr)
                    found.append((a[ok], b[ok], (sp + sr)[ok] if both else sp[ok]))
                    task.advance(len(rows))
        if not found:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0)
        return tuple(np.concatenate(parts) for parts in zip(*found))  # type: ignore[return-value]

    def _verify(self, views: SemanticViews, a: np.ndarray, b: np.ndarray, prompt_sim: np.ndarray,
                response_sim: np.ndarray | None) -> np.ndarray:
        """Which candidate pairs are duplicates (the cosines already passed the lowest bars)."""
        cfg = self.config
        same_prompt_numbers = views.prompt_numbers[a] == views.prompt_numbers[b] if cfg.numbers_must_match else True
        if response_sim is None:
            return (prompt_sim >= cfg.threshold) & same_prompt_numbers
        answers_agree = response_sim >= cfg.response_threshold
        if cfg.numbers_must_match:
            answers_agree &= views.response_numbers[a] == views.response_numbers[b]
        informative = views.informative[a] & views.informative[b]
        prompts_close = np.where(informative, prompt_sim >= cfg.prompt_threshold,
                                 (prompt_sim >= cfg.threshold) & same_prompt_numbers)
        return answers_agree & prompts_close

    def _resolve(self, records: Sequence[Record], pairs: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
        """In keep order, remove each record that pairs with an already kept one (its best match)."""
        left, right, score = pairs
        n = len(records)
        neighbours: dict[int, list[tuple[float, int]]] = {}
        for a, b, s in zip(left.tolist(), right.tolist(), score.tolist()):
            neighbours.setdefault(a, []).append((s, b))
            neighbours.setdefault(b, []).append((s, a))
        dup_of = np.full(n, -1, dtype=np.int64)
        kept = np.zeros(n, dtype=bool)
        for i in np.argsort(keep_order(records, self.config.keep), kind="stable"):
            matches = [(s, j) for s, j in neighbours.get(int(i), ()) if kept[j]]
            if matches:
                dup_of[i] = max(matches)[1]
            else:
                kept[i] = True
        return dup_of
