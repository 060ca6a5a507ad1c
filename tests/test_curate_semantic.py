"""Semantic dedup: template removal, number checks, the pair rule, resolution, embedding cache."""
from __future__ import annotations

import json

import numpy as np
import pytest

from curatune.curate.base import CurateContext
from curatune.curate.config import BalanceConfig, CurateConfig, SemanticDedupConfig
from curatune.curate.dedup import SemanticDedup, default_clusters, semantic_views
from curatune.curate.embeddings import EmbeddingCache
from curatune.curate.template_text import TemplateStripper, numbers, segments
from curatune.records import Record


def rec(prompt: str, response: str) -> Record:
    return Record.make([{"role": "user", "content": prompt}, {"role": "assistant", "content": response}])


EXTRACT = ("Extract the product attributes from the description as a JSON object with the keys brand, product, "
           "colour, size, material, price and currency. Use null for anything the description does not mention.")


def product(description: str, brand, name, colour=None, size=None, material=None, price=None, currency=None) -> Record:
    target = {"brand": brand, "product": name, "colour": colour, "size": size, "material": material,
              "price": price, "currency": currency}
    return rec(f"{EXTRACT}\n\n{description}", json.dumps(target))


def product_records() -> list[Record]:
    """Twelve different products under one long instruction, a reworded copy of the first,
    and a sibling of the first that differs only in its price."""
    return [
        product("Meet the sky blue sweater by Ivory Thread. Hand finished with reinforced cuffs. It sells for US$156.",
                "Ivory Thread", "sweater", "sky blue", price=156, currency="USD"),
        product("The Kinetiq dumbbell comes in royal blue. Weight: 2 kg. US$38.50.",
                "Kinetiq", "dumbbell", "royal blue", "2 kg", price=38.5, currency="USD"),
        product("A well-made skillet in carbon steel from Linden House. Diameter: 28 cm. Yours for US$30.",
                "Linden House", "skillet", size="28 cm", material="carbon steel", price=30, currency="USD"),
        product("Looking for a new hair oil? Luma Botanics has you covered. Each bottle holds 50 ml.",
                "Luma Botanics", "hair oil", size="50 ml"),
        product("Running shoes for sale from the Fernhill Athletics range, in black knit mesh, size EU 40.",
                "Fernhill Athletics", "running shoes", "black", "EU 40", "knit mesh"),
        product("This bluetooth speaker by Zentro comes in midnight blue and retails for 190.00 dollars.",
                "Zentro", "bluetooth speaker", "midnight blue", price=190, currency="USD"),
        product("Introducing the olive green suede sneakers from Aldercroft, shoe size EU 44, priced at 113.50 euros.",
                "Aldercroft", "sneakers", "olive green", "EU 44", "suede", 113.5, "EUR"),
        product("Chinos by Wrenfield in cotton twill, size W34 L32, for 40.99 USD. Designed for comfort on long days.",
                "Wrenfield", "chinos", size="W34 L32", material="cotton twill", price=40.99, currency="USD"),
        product("A bamboo cutting board from Stonebrook measuring 30 x 20 cm. It sells for 39,00 EUR.",
                "Stonebrook", "cutting board", size="30 x 20 cm", material="bamboo", price=39, currency="EUR"),
        product("Mirelle eau de parfum, 30 ml. Yours for 61.99 euros.",
                "Mirelle", "eau de parfum", size="30 ml", price=61.99, currency="EUR"),
        product("The Trailborn tennis racket is black carbon fibre with a grip 2 handle. 63.99 euros.",
                "Trailborn", "tennis racket", "black", "grip 2", "carbon fibre", 63.99, "EUR"),
        product("Bramblebee building blocks set with 500 pieces of ABS plastic. Comes in a sturdy storage box.",
                "Bramblebee", "building blocks set", size="500 pieces", material="ABS plastic"),
        # A reworded copy of the first product: other wording, price format and layout.
        product("Sweater - Brand: Ivory Thread | Color: sky blue | Price: 156.00 USD",
                "Ivory Thread", "sweater", "sky blue", price=156, currency="USD"),
        # The same sweater at another price is another item (embeddings barely see the number).
        product("Meet the sky blue sweater by Ivory Thread. Hand finished with reinforced cuffs. It sells for US$120.",
                "Ivory Thread", "sweater", "sky blue", price=120, currency="USD"),
    ]


# ----------------------------------------------------------------------------- text views (no model)


def test_segments_split_lines_sentences_and_field_labels():
    text = 'Question: what is mentioned last?\nIt rained. Then it snowed!\n{"brand": "Acme", "price": 15.5}\nAnswer:'
    assert segments(text) == ["Question:", "what is mentioned last?", "It rained.", "Then it snowed!",
                              '{"brand": "Acme", "price": 15.5}', "Answer:"]


def test_template_stripper_drops_only_segments_shared_by_many_records():
    texts = [f"{EXTRACT}\n\nItem {i} is a {colour} lamp." for i, colour in enumerate(["red", "blue", "green"] * 4)]
    texts.append("Question: is a lamp a light? It is.")
    stripper = TemplateStripper(min_fraction=0.001, min_records=10).fit(texts)
    assert stripper.cutoff == 10 and stripper.template_segments == 2  # both instruction sentences
    assert stripper.strip(texts[0]) == "Item 0 is a red lamp."
    assert stripper.strip(texts[-1]) == texts[-1]  # nothing template in it: unchanged
    # A segment in fewer records than the cutoff is content, even if it repeats.
    few = TemplateStripper(min_records=13).fit(texts)
    assert few.template_segments == 0 and few.strip(texts[0]).startswith("Extract the product")
    # The fraction wins on large datasets: 0.001 of 50,000 records is 50.
    assert TemplateStripper(0.001, 10).fit(["x"] * 50_000).cutoff == 50


def test_numbers_are_canonical_across_formats():
    assert numbers("It sells for US$1,539.00") == numbers("List price 1.539 EUR") == {"1539"}
    assert numbers("61,50 €") == numbers("61.5 euros") == {"61.5"}
    assert numbers("Price: $38.50, weight 2 kg") != numbers("Price: $15.50, weight 2 kg")
    assert numbers("no digits here") == frozenset()


def test_semantic_views_informative_answers_and_template_only_prompts():
    records = [rec(f"Is the review positive?\n{text}", "Yes") for text in
               ["Great film.", "Loved it.", "Superb acting.", "A joy.", "Moving.", "Fun.", "Brilliant.", "Fine.",
                "Charming.", "Warm.", "Witty."]]
    records.append(rec("Is the review positive?", "No, the reviewer says the plot is thin and the acting is wooden."))
    views = semantic_views(records, SemanticDedupConfig())
    assert views.prompts[0] == "Great film."  # the instruction is template
    assert views.prompts[-1] == "Is the review positive?"  # nothing but template: the whole prompt is kept
    assert views.responses[0] == "Yes"  # a stock answer stays embeddable...
    assert not views.informative[0] and views.informative[-1]  # ...but is no evidence
    assert views.template_segments == {"prompt": 1, "response": 1}


def test_resolution_removes_only_direct_duplicates_of_kept_records():
    records = [rec(f"q{i}", f"a{i}") for i in range(4)]
    step = SemanticDedup(SemanticDedupConfig())
    # A~B and B~C but not A~C: B goes (duplicate of A), C stays (its only match was removed).
    pairs = (np.array([0, 1]), np.array([1, 2]), np.array([1.9, 1.95]))
    assert step._resolve(records, pairs).tolist() == [-1, 0, -1, -1]
    # keep=longest picks the survivor by response length, whatever the input order.
    records[1] = rec("q1", "a much longer answer")
    longest = SemanticDedup(SemanticDedupConfig(keep="longest"))
    assert longest._resolve(records, pairs).tolist() == [1, -1, 1, -1]


def test_default_clusters_exact_search_for_moderate_sizes():
    assert default_clusters(26_000) == 1
    assert default_clusters(200_000) == round((200_000 / 2) ** 0.5)


def test_config_rejects_unknown_field_and_dtype():
    from curatune.config import validate_config
    from curatune.errors import ConfigError

    cfg = CurateConfig.model_validate({"steps": [{"name": "semantic", "field": "text", "dtype": "float32"}]})
    assert cfg.steps[0].field == "text"
    for bad in ({"field": "both"}, {"dtype": "int8"}, {"response_treshold": 0.9}):
        with pytest.raises(ConfigError):
            validate_config({"curate": {"steps": [{"name": "semantic", **bad}]}})


def test_embedding_cache_keeps_keys_that_end_with_a_nul_byte(tmp_path):
    cache = EmbeddingCache(tmp_path, "k")
    keys = [b"\x01" * 15 + b"\x00", b"\x02" * 16]  # numpy's S16 strips the trailing NUL
    cache.save(keys, np.eye(2, dtype=np.float32))
    found = cache.load(set(keys))
    assert set(found) == set(keys) and found[keys[0]].tolist() == [1.0, 0.0]


# ----------------------------------------------------------------------------- with the embedder


@pytest.fixture(scope="module")
def context(tmp_path_factory) -> CurateContext:
    return CurateContext(workers=1, cache_dir=tmp_path_factory.mktemp("emb-cache"))


def test_template_dominated_paraphrase_is_found_and_template_siblings_are_not(context):
    records = product_records()
    result = SemanticDedup(SemanticDedupConfig()).run(records, context)
    assert [r.record for r in result.removed] == [records[12]]
    removal = result.removed[0]
    assert removal.reason == "semantic_duplicate" and removal.duplicate_of == records[0].id
    assert removal.cluster_id == f"sem-{records[0].id}" and "informative answers" in removal.detail
    assert result.counters["template_segments"]["prompt"] == 2
    # Embedding the whole text, where the shared instruction dominates, misses the paraphrase;
    # without the number check the sweater at another price goes too.
    whole = SemanticDedup(SemanticDedupConfig(field="text", strip_templates=False, numbers_must_match=False)).run(records, context)
    assert not [r for r in whole.removed if r.record is records[12] and r.duplicate_of == records[0].id]
    no_numbers = SemanticDedup(SemanticDedupConfig(numbers_must_match=False)).run(records, context)
    assert records[13] in [r.record for r in no_numbers.removed]


YES_NO_A = "Answer the following question with yes or no.\nQuestion: {q}"
YES_NO_B = "{q}\nReply with yes or no."
QUESTIONS = [
    ("Is the Eiffel Tower in Paris?", "Yes"), ("Is the Colosseum in Rome?", "Yes"), ("Can penguins fly?", "No"),
    ("Is water wet at room temperature?", "Yes"), ("Do cats bark?", "No"), ("Is Mount Everest in Africa?", "No"),
    ("Is gold a metal?", "Yes"), ("Is the Moon a planet?", "No"), ("Do bees make honey?", "Yes"),
    ("Is the Pacific an ocean?", "Yes"),
    # Same template, same answer, one number apart: embeddings score these pairs 0.99.
    ("John has 3 apples and buys 5 more. Does he now have more than 7 apples?", "Yes"),
    ("John has 3 apples and buys 6 more. Does he now have more than 7 apples?", "Yes"),
]


def test_short_answers_need_near_identical_prompts_and_the_same_numbers(context):
    records = [rec(YES_NO_A.format(q=q), a) for q, a in QUESTIONS]
    records += [rec(YES_NO_B.format(q=q), a) for q, a in QUESTIONS[2:]]  # the same items under template B
    result = SemanticDedup(SemanticDedupConfig()).run(records, context)
    partner = {r.record.prompt: r.duplicate_of for r in result.removed}
    by_id = {r.id: r for r in records}
    # Each item asked again under the other template is found; its survivor is the template-A copy.
    assert len(result.removed) == 10
    for q, _ in QUESTIONS[2:]:
        assert by_id[partner[YES_NO_B.format(q=q)]].prompt == YES_NO_A.format(q=q)
    assert all("short or templated answers" in r.detail for r in result.removed)
    # The two apple questions share the template and the answer but not the numbers: both kept.
    apples = {YES_NO_A.format(q=QUESTIONS[10][0]), YES_NO_A.format(q=QUESTIONS[11][0])}
    assert apples <= {r.prompt for r in result.kept}
    blind = SemanticDedup(SemanticDedupConfig(numbers_must_match=False)).run(records, context)
    assert apples & {r.record.prompt for r in blind.removed}


def test_embedding_cache_is_reused_and_workers_give_the_same_vectors(tmp_path, monkeypatch):
    import curatune.curate.embeddings as emb
    from curatune.curate.balance import Balance

    records = product_records()
    ctx = CurateContext(workers=1, cache_dir=tmp_path / "a")
    first = SemanticDedup(SemanticDedupConfig()).run(records, ctx)
    assert list((tmp_path / "a" / "embeddings").rglob("*.npz"))
    texts = [r.text for r in records]
    in_process = emb.embed_texts(texts, ctx)
    # Forked workers (one torch thread each) embed the same chunks to the same vectors.
    monkeypatch.setattr(emb, "_MIN_TEXTS_FOR_WORKERS", 1)
    monkeypatch.setattr(emb, "_CHUNK_TEXTS", 4)
    in_process_chunked = emb.embed_texts(texts, CurateContext(workers=1, cache_dir=tmp_path / "b"))
    forked = emb.embed_texts(texts, CurateContext(workers=2, cache_dir=tmp_path / "c"))
    np.testing.assert_allclose(forked, in_process_chunked, atol=1e-6)
    np.testing.assert_allclose(forked, in_process, atol=2e-2)  # other batches, bfloat16 rounding
    # A re-run reads every vector from the cache: the embedder is never loaded.
    monkeypatch.setattr(emb, "load_embedder", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = SemanticDedup(SemanticDedupConfig()).run(records, ctx)
    assert [r.record.id for r in again.removed] == [r.record.id for r in first.removed]
    # Balancing without categories groups by k-means clusters of the same cached embeddings.
    balanced = Balance(BalanceConfig(by="auto", clusters=2, strategy="cap", max_per_group=3)).run(records, ctx)
    assert balanced.counters["grouped_by"] == "cluster" and balanced.counters["groups"] == 2
    assert len(balanced.kept) < len(records) and len(balanced.kept) + len(balanced.removed) == len(records)
