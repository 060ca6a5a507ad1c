"""A demo dataset curatune generates itself: product descriptions -> attribute JSON.

The task is realistic (extract brand, product, colour, size, material, price and
currency from a shop listing, null when not stated) and the training split carries
planted flaws whose truth goes to a separate labels file, so curation can be scored:

========================  ===============================================================
flaw                      what the row is
========================  ===============================================================
``exact_dup``             a copy of an earlier row; some copies change only case,
                          whitespace or punctuation of the description (``variant``)
``near_dup``              an earlier row with one or two small edits (a typo, a synonym,
                          a dropped word); ``jaccard`` >= 0.8 (see :func:`shingle_jaccard`)
``semantic_dup``          the same product as an earlier row, described anew (other
                          template, phrasing and price format); same target JSON
``empty``                 the response is empty (or only whitespace)
``truncated``             the response JSON is cut off mid-way
``boilerplate``           a refusal / AI boilerplate instead of the JSON
``wrong_language``        instruction and description in German, French or Spanish
========================  ===============================================================

and the category balance is skewed (apparel ~44%). ``heldout.jsonl`` is clean: no flaw,
no product and no near-duplicate text shared with the training split, categories balanced.

Rows are alpaca-style ``{instruction, input, output, category}``. The ``id`` in
labels.jsonl is the :class:`~curatune.records.Record` id of the row as the alpaca
converter builds it (:func:`alpaca_messages`)::

    messages = [{"role": "user", "content": instruction + "\\n\\n" + input},
                {"role": "assistant", "content": output}]
    id = Record.make(messages).id        # contents used as they are: no stripping

Every label also carries ``row`` (1-based line number in train.jsonl) for joining when ids
differ (e.g. a loader that strips whitespace). Exact copies with ``variant: "verbatim"``
share their original's id, so join those on ``row``.
Duplicates always come after their original in the file, so "keep the first" is right.
"""
from __future__ import annotations

import json
import random
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

from curatune.data import demo_vocab as V
from curatune.records import Record
from curatune.rundir import atomic_write_text

FLAW_RATES = {
    "exact_dup": 0.05,
    "near_dup": 0.05,
    "semantic_dup": 0.04,
    "empty": 0.02,
    "truncated": 0.03,
    "boilerplate": 0.03,
    "wrong_language": 0.04,
}
DUPLICATE_FLAWS = ("exact_dup", "near_dup", "semantic_dup")
EXACT_VARIANTS = ("verbatim", "case", "whitespace", "punctuation")
NEAR_DUP_MIN_JACCARD = 0.8
#: Two rows of different products never get this close (so unlabelled near-duplicates cannot occur).
DISTINCT_MAX_JACCARD = 0.7
#: A semantic duplicate must be reworded enough not to count as a near-duplicate.
SEMANTIC_MAX_JACCARD = 0.6
SHINGLE_SIZE = 5


class DemoPaths(NamedTuple):
    train: Path
    heldout: Path
    labels: Path

    @property
    def summary(self) -> Path:
        """summary.json beside the data: seed, counts per flaw and per category."""
        return self.train.parent / "summary.json"


# ----------------------------------------------------------------------------- shared helpers


def alpaca_messages(instruction: str, input: str, output: str) -> list[dict[str, str]]:
    """The conversation of an alpaca row, as the loader's converter builds it."""
    prompt = f"{instruction}\n\n{input}" if input else instruction
    return [{"role": "user", "content": prompt}, {"role": "assistant", "content": output}]


def row_id(row: dict[str, Any]) -> str:
    return Record.make(alpaca_messages(row["instruction"], row["input"], row["output"])).id


def row_text(row: dict[str, Any]) -> str:
    """The text near-duplicate similarity is measured on: :attr:`Record.text` of the row."""
    return "\n".join(m["content"] for m in alpaca_messages(row["instruction"], row["input"], row["output"]))


def shingles(text: str, n: int = SHINGLE_SIZE) -> set[tuple[str, ...]]:
    """Word n-grams of the lowercased text, words being ``\\w+`` runs."""
    words = re.findall(r"\w+", text.lower())
    if len(words) < n:
        return {tuple(words)}
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def shingle_jaccard(a: str, b: str, n: int = SHINGLE_SIZE) -> float:
    """Jaccard similarity of the word n-gram shingle sets of two texts."""
    sa, sb = shingles(a, n), shingles(b, n)
    return _jaccard(sa, sb)


def _jaccard(sa: set, sb: set) -> float:
    union = len(sa | sb)
    return len(sa & sb) / union if union else 1.0


def normalized(text: str) -> str:
    """Case, whitespace and punctuation folded away: what an exact-duplicate check compares."""
    return " ".join(re.findall(r"\w+", text.lower()))


# ----------------------------------------------------------------------------- products


@dataclass(frozen=True)
class Product:
    category: str
    product: str
    brand: str | None
    colour: str | None
    size: str | None
    material: str | None
    price: float | int | None
    currency: str | None
    language: str = "en"

    def target(self) -> dict[str, Any]:
        return {key: getattr(self, key) for key in V.KEYS}

    def target_json(self) -> str:
        return json.dumps(self.target(), ensure_ascii=False)


@dataclass(eq=False)  # rows are compared by identity: an exact copy is still another row
class Row:
    instruction: str
    input: str
    output: str
    category: str
    product: Product
    flaw: str | None = None
    of: "Row | None" = None
    extra: dict[str, Any] = field(default_factory=dict)
    opening: int | None = None  # opening template of the description (-1: spec sheet)

    def as_json(self) -> dict[str, Any]:
        return {"instruction": self.instruction, "input": self.input, "output": self.output, "category": self.category}

    @property
    def text(self) -> str:
        return row_text(self.as_json())

    @property
    def id(self) -> str:
        return row_id(self.as_json())


def _draw_price(rng: random.Random, low: float, high: float) -> float | int:
    base = rng.uniform(low, high)
    if high >= 300:
        return int(round(base, -1)) - rng.choice((1, 0, 0))  # 1299 / 1300
    ending = rng.choice((0.99, 0.99, 0.95, 0.5, 0.0, 0.0))
    value = round(int(base) + ending, 2)
    return int(value) if float(value).is_integer() else value


def format_price(amount: float | int, currency: str, rng: random.Random) -> str:
    """One of many shop styles: $24.99, 24.99 USD, 19,90 €, EUR 1,299.00, £12, ..."""
    whole = float(amount).is_integer()
    dotted = f"{amount:,.2f}" if not whole or rng.random() < 0.4 else f"{int(amount):,}"
    comma = dotted.replace(",", "\u0000").replace(".", ",").replace("\u0000", ".")
    styles = {
        "USD": (f"${dotted}", f"{dotted} USD", f"USD {dotted}", f"US${dotted}", f"{dotted} dollars"),
        "EUR": (f"€{dotted}", f"{comma} €", f"EUR {dotted}", f"{dotted} euros", f"{comma} EUR"),
        "GBP": (f"£{dotted}", f"{dotted} GBP", f"GBP {dotted}", f"{dotted} pounds"),
    }[currency]
    return rng.choice(styles)


def _size_display(size: str, rng: random.Random) -> str:
    if size in V.LETTER_SIZE_WORDS and rng.random() < 0.35:
        return V.LETTER_SIZE_WORDS[size]
    return size


def _possessive(name: str | None) -> str | None:
    return None if name is None else name + ("'" if name.endswith("s") else "'s")


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


# ----------------------------------------------------------------------------- the generator


class DemoGenerator:
    """Draws unique products and writes varied descriptions for them, from one seeded RNG."""

    def __init__(self, seed: int):
        self.rng = random.Random(f"curatune-demo:{seed}")
        self._used: set[tuple] = set()
        self._texts: dict[str, list[set]] = {}  # product kind -> shingle sets of rows so far

    # -- products
    def draw_product(self, category: str) -> Product:
        rng = self.rng
        for _ in range(1000):
            kind = rng.choice(V.KINDS[category])
            currency = rng.choices(("USD", "EUR", "GBP"), weights=(5, 3, 2))[0]
            price = _draw_price(rng, *kind.price) if rng.random() > 0.1 else None
            product = Product(
                category=category,
                product=kind.name,
                brand=rng.choice(V.BRANDS[category]) if rng.random() > 0.1 else None,
                colour=rng.choice(kind.colours) if kind.colours and rng.random() > 0.15 else None,
                size=rng.choice(kind.sizes) if kind.sizes and rng.random() > 0.15 else None,
                material=rng.choice(kind.materials) if kind.materials and rng.random() > 0.2 else None,
                price=price,
                currency=currency if price is not None else None,
            )
            if self._claim(product):
                return product
        raise RuntimeError(f"ran out of distinct {category} products")  # vocabularies are far larger

    def draw_foreign_product(self, language: V.Language) -> Product:
        rng = self.rng
        for _ in range(1000):
            kind = rng.choice(language.kinds)
            price = _draw_price(rng, 9, 150) if rng.random() > 0.1 else None
            product = Product(
                category=kind.category,
                product=kind.name,
                brand=rng.choice(V.BRANDS[kind.category]) if rng.random() > 0.1 else None,
                colour=rng.choice(language.colours) if rng.random() > 0.15 else None,
                size=rng.choice(kind.sizes) if kind.sizes and rng.random() > 0.15 else None,
                material=rng.choice(kind.materials) if kind.materials and rng.random() > 0.2 else None,
                price=price,
                currency="EUR" if price is not None else None,
                language=language.code,
            )
            if self._claim(product):
                return product
        raise RuntimeError(f"ran out of distinct {language.code} products")

    def _claim(self, product: Product) -> bool:
        key = (product.language, product.category, product.product, product.brand, product.colour, product.size,
               product.material, product.price, product.currency)
        if key in self._used:
            return False
        self._used.add(key)
        return True

    # -- descriptions
    def describe(self, p: Product, avoid_opening: int | None = None) -> tuple[str, int]:
        """A shop description stating exactly the non-null attributes of ``p``."""
        rng = self.rng
        kind = next(k for k in V.KINDS[p.category] if k.name == p.product)
        size = _size_display(p.size, rng) if p.size else None
        price = format_price(p.price, p.currency, rng) if p.price is not None else None
        values = {"brand": p.brand, "brands": _possessive(p.brand), "product": p.product, "Product": _cap(p.product), "colour": p.colour,
                  "material": p.material, "size": size, "price": price, **V.grammar(kind.plural)}
        if rng.random() < 0.15 and avoid_opening != -1:
            return self._spec_sheet(p, values), -1

        present = {k for k in ("brand", "colour", "material") if values[k]}
        choices = [i for i, (_, uses) in enumerate(V.OPENINGS) if uses <= present and i != avoid_opening]
        opening_index = rng.choice(choices)
        template, stated = V.OPENINGS[opening_index]
        sentences = []
        if "brand" in present - stated:
            sentences.append(rng.choice(V.BRAND_PHRASES).format(**values))
        if "colour" in present - stated:
            sentences.append(rng.choice(V.COLOUR_PHRASES).format(**values))
        if "material" in present - stated:
            sentences.append(rng.choice(V.MATERIAL_PHRASES).format(**values))
        if size:
            phrases = kind.size_phrases or V.SIZE_PHRASES[p.category]
            sentences.append(rng.choice(phrases).format(**values))
        fillers = rng.sample(V.FILLERS[p.category], rng.randint(1, 3))
        body = sentences + fillers
        rng.shuffle(body)
        if price:
            price_sentence = rng.choice(V.PRICE_PHRASES).format(**values)
            body.insert(len(body) if rng.random() < 0.7 else rng.randint(0, len(body)), price_sentence)
        return " ".join([_cap(template.format(**values))] + body), opening_index

    def _spec_sheet(self, p: Product, values: dict[str, Any]) -> str:
        rng = self.rng
        fields = [f"{label}: {values[key]}" for key, label in
                  (("brand", "Brand"), ("colour", rng.choice(("Colour", "Color"))), ("size", "Size"),
                   ("material", "Material"), ("price", "Price")) if values[key]]
        sep = rng.choice((" | ", "; ", " / "))
        head = f"{values['Product']} - " if fields else values["Product"]
        return head + sep.join(fields) + " " + rng.choice(V.FILLERS[p.category])

    def describe_foreign(self, p: Product, language: V.Language) -> str:
        rng = self.rng
        kind_name = p.product
        values = {"brand": p.brand, "product": kind_name, "colour": p.colour, "material": p.material,
                  "size": p.size, "price": None}
        if p.price is not None:
            amount = f"{p.price:,.2f}".replace(",", "\u0000").replace(".", ",").replace("\u0000", ".")
            values["price"] = rng.choice((f"{amount} €", f"{amount} EUR", f"€ {amount}"))
        if p.brand:
            opening = rng.choice(language.openings_with_brand)
        else:
            opening = rng.choice(language.openings)
        body = []
        if p.colour:
            body.append(rng.choice(language.colour))
        if p.material:
            body.append(rng.choice(language.material))
        if p.size:
            clothing = p.category == "apparel" or "Schuhe" in p.product or "chaussures" in p.product \
                or "zapatillas" in p.product
            body.append(rng.choice(language.size if clothing or not language.size_other else language.size_other))
        body += rng.sample(language.fillers, rng.randint(1, 2))
        rng.shuffle(body)
        if values["price"]:
            body.append(rng.choice(language.price))
        return " ".join(_cap(s.format(**values)) for s in [opening] + body)

    # -- rows
    def clean_row(self, category: str) -> Row:
        for _ in range(100):
            product = self.draw_product(category)
            description, opening = self.describe(product)
            row = Row(self.rng.choice(V.INSTRUCTIONS), description, product.target_json(), category, product,
                      opening=opening)
            if self.accept(row):
                return row
        raise RuntimeError("could not draw a distinct row")

    def flawed_row(self, category: str, flaw: str) -> Row:
        for _ in range(100):
            row = self._flawed_row(category, flaw)
            if self.accept(row):
                return row
        raise RuntimeError(f"could not draw a distinct {flaw} row")

    def _flawed_row(self, category: str, flaw: str) -> Row:
        rng = self.rng
        if flaw == "wrong_language":
            language = rng.choice(V.LANGUAGES)
            product = self.draw_foreign_product(language)
            row = Row(language.instruction, self.describe_foreign(product, language), product.target_json(),
                      product.category, product, flaw, extra={"language": language.code})
            return row
        product = self.draw_product(category)
        description, _ = self.describe(product)
        row = Row(rng.choice(V.INSTRUCTIONS), description, product.target_json(), category, product, flaw)
        if flaw == "empty":
            row.output = "" if rng.random() < 0.8 else rng.choice((" ", "\n", "  \n"))
        elif flaw == "truncated":
            full = row.output
            row.output = full[: rng.randint(max(8, int(len(full) * 0.3)), len(full) - 2)]
        elif flaw == "boilerplate":
            row.output = rng.choice(V.BOILERPLATE)
        else:
            raise ValueError(flaw)
        return row

    def accept(self, row: Row) -> bool:
        """Keep a new row only when it is not near any earlier row of the same product kind."""
        sh = shingles(row.text)
        seen = self._texts.setdefault(row.product.product, [])
        if any(_jaccard(sh, other) >= DISTINCT_MAX_JACCARD for other in seen):
            return False
        seen.append(sh)
        return True

    # -- duplicates of an earlier row
    def exact_dup(self, original: Row) -> Row:
        variant = self.rng.choice(EXACT_VARIANTS)
        text = original.input
        if variant == "case":
            text = text.lower() if self.rng.random() < 0.7 else text.upper()
        elif variant == "whitespace":
            text = re.sub(r"\. ", lambda m: ".  " if self.rng.random() < 0.5 else ".\n", text) + " "
        elif variant == "punctuation":
            text = re.sub(r"[.!?](?=\s|$)", "", text)
            text = text.replace(": ", " - ") if self.rng.random() < 0.5 else text + "!"
        return Row(original.instruction, text, original.output, original.category, original.product, "exact_dup",
                   original, {"variant": variant})

    def near_dup(self, original: Row) -> Row | None:
        """One or two small edits that keep every attribute value; None if none fits."""
        protected = [v for v in (original.product.brand, original.product.colour, original.product.material,
                                 original.product.product) if v]
        base_text = original.text
        for _ in range(40):
            text = original.input
            edits = []
            for _ in range(self.rng.choice((1, 1, 2))):
                edited, how = self._edit(text)
                if edited is not None:
                    text, edits = edited, edits + [how]
            if not edits or normalized(text) == normalized(original.input):
                continue
            if not all(v.lower() in text.lower() for v in protected) or not _attributes_survive(original.input, text):
                continue
            row = Row(original.instruction, text, original.output, original.category, original.product,
                      "near_dup", original)
            similarity = shingle_jaccard(base_text, row.text)
            if NEAR_DUP_MIN_JACCARD <= similarity < 1.0:
                row.extra = {"jaccard": round(similarity, 4), "edits": edits}
                return row
        return None

    def _edit(self, text: str) -> tuple[str | None, str]:
        rng = self.rng
        how = rng.choice(("typo", "synonym", "drop"))
        words = [m for m in re.finditer(r"[A-Za-z]{5,}", text)]
        if how == "synonym":
            options = [(a, b) for a, b in V.SYNONYMS.items() if re.search(rf"\b{re.escape(a)}\b", text)]
            if options:
                a, b = rng.choice(options)
                return re.sub(rf"\b{re.escape(a)}\b", b, text, count=1), "synonym"
            how = "typo"
        if how == "drop":
            candidates = [m for m in re.finditer(r"\b[A-Za-z]+\b ", text) if m.start() > 0]
            if candidates:
                m = rng.choice(candidates)
                return text[: m.start()] + text[m.end():], "drop"
            how = "typo"
        if words:
            m = rng.choice(words)
            w = m.group()
            i = rng.randint(1, len(w) - 2)
            typo = w[:i] + w[i + 1] + w[i] + w[i + 2 :]
            if typo != w:
                return text[: m.start()] + typo + text[m.end():], "typo"
        return None, how

    def semantic_dup(self, original: Row, opening: int | None) -> Row | None:
        """The same product described anew: other template and wording, same target."""
        for _ in range(30):
            description, _ = self.describe(original.product, avoid_opening=opening)
            instruction = self.rng.choice(V.INSTRUCTIONS)
            row = Row(instruction, description, original.output, original.category, original.product,
                      "semantic_dup", original)
            similarity = shingle_jaccard(original.text, row.text)
            if similarity < SEMANTIC_MAX_JACCARD and normalized(row.input) != normalized(original.input):
                row.extra = {"jaccard": round(similarity, 4)}
                return row
        return None


def _attributes_survive(before: str, after: str) -> bool:
    """Prices and sizes are digit runs: an edit must not touch any of them."""
    return re.findall(r"\d+", before) == re.findall(r"\d+", after)


# ----------------------------------------------------------------------------- assembling the splits


def flaw_counts(n_train: int) -> dict[str, int]:
    return {flaw: int(rate * n_train + 0.5) for flaw, rate in FLAW_RATES.items()}


def generate_demo_dataset(out_dir: str | Path, n_train: int = 1200, n_heldout: int = 100, seed: int = 0) -> DemoPaths:
    """Write train.jsonl, heldout.jsonl, labels.jsonl and summary.json to ``out_dir``.

    The same arguments always give byte-identical files.
    """
    if n_train < 1 or n_heldout < 0:
        raise ValueError("n_train must be >= 1 and n_heldout >= 0")
    out = Path(out_dir)
    gen = DemoGenerator(seed)
    rng = gen.rng
    categories = list(V.CATEGORY_WEIGHTS)
    weights = list(V.CATEGORY_WEIGHTS.values())

    def category() -> str:
        return rng.choices(categories, weights=weights)[0]

    counts = flaw_counts(n_train)
    n_dups = sum(counts[f] for f in DUPLICATE_FLAWS)
    n_clean = n_train - sum(counts.values())
    if n_clean < n_dups:  # tiny datasets: fewer duplicates than originals to copy
        for flaw in DUPLICATE_FLAWS:
            counts[flaw] = 0
        n_clean = n_train - sum(counts.values())

    rows = [gen.clean_row(category()) for _ in range(n_clean)]
    for flaw in ("empty", "truncated", "boilerplate", "wrong_language"):
        rows += [gen.flawed_row(category(), flaw) for _ in range(counts[flaw])]
    rng.shuffle(rows)

    clean = [r for r in rows if r.flaw is None]
    originals = rng.sample(clean, n_dups)
    plan = [f for f in DUPLICATE_FLAWS for _ in range(counts[f])]
    for flaw, original in zip(plan, originals):
        dup = None
        if flaw == "exact_dup":
            dup = gen.exact_dup(original)
        elif flaw == "near_dup":
            dup = gen.near_dup(original)
        elif flaw == "semantic_dup":
            dup = gen.semantic_dup(original, original.opening)
        if dup is None:  # never seen with these vocabularies; fail loudly rather than miscount
            raise RuntimeError(f"could not make a {flaw} of a row; vocabularies need more variety")
        position = rows.index(original) + 1
        rows.insert(rng.randint(position, len(rows)), dup)
    heldout = _heldout_rows(gen, n_heldout)

    out.mkdir(parents=True, exist_ok=True)
    paths = DemoPaths(out / "train.jsonl", out / "heldout.jsonl", out / "labels.jsonl")
    atomic_write_text(paths.train, _jsonl(r.as_json() for r in rows))
    atomic_write_text(paths.heldout, _jsonl(r.as_json() for r in heldout))
    labels = _labels(rows)
    atomic_write_text(paths.labels, _jsonl(labels))
    summary = {
        "seed": seed,
        "n_train": len(rows),
        "n_heldout": len(heldout),
        "flaws": dict(Counter(label["flaw"] for label in labels)),
        "clean_train_rows": sum(1 for r in rows if r.flaw is None),
        "categories_train": dict(Counter(r.category for r in rows).most_common()),
        "categories_heldout": dict(Counter(r.category for r in heldout).most_common()),
        "record_id": "Record.make([{user: instruction + '\\n\\n' + input}, {assistant: output}]).id",
        "near_dup_similarity": f"Jaccard of word {SHINGLE_SIZE}-gram shingles of Record.text, lowercased",
    }
    atomic_write_text(paths.summary, json.dumps(summary, indent=2, ensure_ascii=False) + "\n")
    return paths


def _heldout_rows(gen: DemoGenerator, n: int) -> list[Row]:
    """Clean rows, categories balanced, after the training rows so nothing is shared."""
    categories = list(V.CATEGORY_WEIGHTS)
    return [gen.clean_row(categories[i % len(categories)]) for i in range(n)]


def _labels(rows: list[Row]) -> list[dict[str, Any]]:
    labels = []
    for number, row in enumerate(rows, start=1):
        if row.flaw is None:
            continue
        label = {"id": row.id, "flaw": row.flaw, "of": row.of.id if row.of else None,
                 "row": number, "of_row": rows.index(row.of) + 1 if row.of else None}
        label.update(row.extra)
        labels.append(label)
    return labels


def _jsonl(items) -> str:
    return "".join(json.dumps(item, ensure_ascii=False) + "\n" for item in items)
