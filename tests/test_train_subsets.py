"""Held-out carve and nested subsets (curatune.train.subsets / plan): no model needed."""
from __future__ import annotations

import json
import random

import pandas as pd
import pytest
from train_helpers import curated_run_dir, make_records, tiny_config

from curatune.config import validate_config
from curatune.errors import ConfigError, DataError
from curatune.records import Record, frame_to_records
from curatune.rundir import read_json
from curatune.train.plan import plan_sweep
from curatune.train.subsets import (
    SubsetPlan,
    carve_heldout,
    category_counts,
    make_split,
    stratified_order,
)


def test_subsets_are_nested_for_every_seed():
    pool = make_records(120)
    plan = SubsetPlan.build(pool, seeds=[0, 1, 2], sizes=[10, 25, 60, 120], stratify=True)
    for seed in (0, 1, 2):
        previous: set[str] = set()
        for size in (10, 25, 60, 120):
            ids = [r.id for r in plan.subset(seed, size)]
            assert len(ids) == len(set(ids)) == size
            assert previous <= set(ids)
            previous = set(ids)
    # different seeds draw different subsets
    assert {r.id for r in plan.subset(0, 10)} != {r.id for r in plan.subset(1, 10)}


def test_stratified_prefixes_keep_category_proportions():
    pool = make_records(200, skew=True)  # 75% / 12.5% / 12.5%
    plan = SubsetPlan.build(pool, seeds=[3], sizes=list(range(8, 201, 8)), stratify=True)
    total = category_counts(pool)
    for size in plan.sizes:
        got = category_counts(plan.subset(3, size))
        for name, n in total.items():
            assert abs(got.get(name, 0) - size * n / len(pool)) <= 1.0, (size, name, got)


def test_unstratified_draw_is_a_plain_permutation():
    pool = make_records(50)
    order = stratified_order(pool, seed=0, stratify=False)
    assert sorted(order) == list(range(50))
    assert order != list(range(50))


def test_draw_does_not_depend_on_input_row_order():
    pool = make_records(40)
    shuffled = pool[:]
    random.Random(5).shuffle(shuffled)
    a = SubsetPlan.build(pool, [0], [10, 20], True)
    b = SubsetPlan.build(shuffled, [0], [10, 20], True)
    assert [r.id for r in a.subset(0, 20)] == [r.id for r in b.subset(0, 20)]


def test_oversized_sizes_are_reported_not_capped():
    plan = SubsetPlan.build(make_records(30), [0], [10, 30, 31, 100], True)
    assert plan.sizes == [10, 30]
    assert plan.oversized == [31, 100]
    with pytest.raises(DataError, match="larger than the training pool"):
        plan.subset(0, 31)


def test_heldout_carve_is_disjoint_stratified_and_seeded():
    records = make_records(90)
    pool, heldout = carve_heldout(records, 15, seed=7, stratify=True)
    assert len(pool) + len(heldout) == 90
    assert not {r.id for r in pool} & {r.id for r in heldout}
    assert category_counts(heldout) == {"bags": 5, "shirts": 5, "shoes": 5}
    again_pool, again_heldout = carve_heldout(list(reversed(records)), 15, seed=7, stratify=True)
    assert [r.id for r in again_heldout] == [r.id for r in heldout]
    _, other = carve_heldout(records, 15, seed=8, stratify=True)
    assert {r.id for r in other} != {r.id for r in heldout}


def test_heldout_larger_than_data_is_an_error():
    with pytest.raises(DataError, match="heldout_size = 10 but only 10"):
        carve_heldout(make_records(10), 10, seed=0, stratify=True)


def test_eval_sources_become_heldout_and_leave_the_pool():
    records = make_records(30)
    external = records[:5] + make_records(40)[35:]  # 5 overlap with the pool, 5 new
    split = make_split(records, external, heldout_size=99, seed=0, stratify=True)
    assert [r.id for r in split.heldout] == [r.id for r in external]
    assert split.removed_from_pool == 5
    assert len(split.pool) == 25
    assert not {r.id for r in split.pool} & {r.id for r in external}


def test_plan_writes_contract_files_and_never_trains_on_heldout(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(60))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[10, 20, 54, 55, 500], seeds=[0, 1], heldout_size=6)
    plan = plan_sweep(config, run_dir)

    document = read_json(run_dir.plan)
    assert document["pool_size"] == 54 and document["heldout_size"] == 6
    assert document["oversized"] == [55, 500]
    assert document["sizes"] == [10, 20, 54]
    assert {(c["method"], c["size"], c["seed"]) for c in document["cells"]} == {
        (m, n, s) for m in ("lora", "full") for n in (10, 20, 54) for s in (0, 1)
    }
    assert all(c["key"] == f"{c['method']}-n{c['size']}-s{c['seed']}" for c in document["cells"])
    assert all(c["path"] == f"train/{c['method']}/n{c['size']}/s{c['seed']}" for c in document["cells"])

    heldout_ids = set(pd.read_parquet(run_dir.heldout)["id"])
    subsets = pd.read_parquet(run_dir.subsets)
    assert list(subsets.columns) == ["seed", "size", "id", "order"]
    assert not heldout_ids & set(subsets["id"])
    for seed in (0, 1):
        rows = subsets[subsets.seed == seed]
        small = set(rows[rows["size"] == 10]["id"])
        assert small <= set(rows[rows["size"] == 20]["id"]) <= set(rows[rows["size"] == 54]["id"])
    assert len(plan.specs) == 12


def test_existing_heldout_is_reused_even_when_settings_change(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(60))
    plan_sweep(tiny_config(run_dir, tiny_model_dir, heldout_size=6), run_dir)
    first = list(pd.read_parquet(run_dir.heldout)["id"])
    changed = tiny_config(run_dir, tiny_model_dir, heldout_size=12, heldout_seed=99)
    plan = plan_sweep(changed, run_dir)
    assert list(pd.read_parquet(run_dir.heldout)["id"]) == first
    assert plan.heldout_size == 6
    assert any("heldout_size = 12 is ignored" in note for note in plan.notes)
    assert not set(first) & {r.id for r in frame_to_records(pd.read_parquet(run_dir.train / "pool.parquet"))}


def test_missing_curated_data_names_the_file(tmp_path, tiny_model_dir):
    from curatune.rundir import RunDir

    run_dir = RunDir(tmp_path / "empty")
    with pytest.raises(DataError, match="kept.parquet not found"):
        plan_sweep(tiny_config(run_dir, tiny_model_dir), run_dir)


def test_raw_data_is_loaded_from_the_sources(tmp_path, tiny_model_dir):
    import json

    from curatune.config import validate_config
    from curatune.rundir import RunDir

    path = tmp_path / "raw.jsonl"
    with open(path, "w") as f:
        for i in range(30):
            f.write(json.dumps({"instruction": f"Say {i}", "input": "", "output": f"{i}"}) + "\n")
    run_dir = RunDir(tmp_path / "run")
    config = validate_config({
        "run_dir": str(run_dir.root), "model": {"base": str(tiny_model_dir)},
        "data": {"sources": [{"path": str(path)}], "heldout_size": 5},
        "train": {"data": "raw", "sizes": [10, 25]},
    })
    plan = plan_sweep(config, run_dir)
    assert plan.pool_size == 25 and plan.heldout_size == 5 and plan.subsets.sizes == [10, 25]


# ----------------------------------------------------------------------------- paired draw


def _write_jsonl(path, records):
    path.write_text("".join(json.dumps({"messages": r.messages, "category": r.category}) + "\n" for r in records))
    return path


def _paired_runs(tmp_path, draw="paired"):
    """A raw source (200 good records, 10 exact duplicates, 30 flawed records curation removed), its
    curated records, and a shared held-out file; returns the plans of a curated and a raw run."""
    good = make_records(200)
    flawed = [Record.make([{"role": "user", "content": f"flawed {i}"}, {"role": "assistant", "content": "lorem ipsum"}],
                          category="shoes", source="synthetic") for i in range(30)]
    raw = good + good[:10] + flawed
    random.Random(0).shuffle(raw)
    heldout = make_records(210)[200:]  # ten records of their own, in neither pool
    sources = _write_jsonl(tmp_path / "raw.jsonl", raw)
    held = _write_jsonl(tmp_path / "heldout.jsonl", heldout)
    plans = {}
    for data in ("curated", "raw"):
        run_dir = curated_run_dir(tmp_path / data, good)
        config = validate_config({
            "run_dir": str(run_dir.root), "model": {"base": str(tmp_path)},
            "data": {"sources": [{"path": str(sources)}], "eval_sources": [{"path": str(held)}]},
            "train": {"sizes": [20, 50, 100], "seeds": [0, 1], "data": data, "draw": draw},
        })
        plans[data] = (plan_sweep(config, run_dir), run_dir)
    return plans, {r.id for r in flawed}


def test_paired_draw_differs_from_the_raw_subset_only_by_curation(tmp_path):
    plans, flawed = _paired_runs(tmp_path)
    (curated, curated_dir), (raw, _) = plans["curated"], plans["raw"]
    summary = read_json(curated_dir.plan)["paired_draw"]
    assert summary["not_in_raw"] == 0 and summary["raw_pool_size"] == 240
    for seed in (0, 1):
        for size in (20, 50, 100):
            raw_ids = [r.id for r in raw.subsets.subset(seed, size)]
            cur_ids = [r.id for r in curated.subsets.subset(seed, size)]
            # Every raw-subset record curation kept (first copy of a duplicate) is in the curated subset ...
            seen, kept_of_raw = set(), []
            for record_id in raw_ids:
                if record_id not in flawed and record_id not in seen:
                    kept_of_raw.append(record_id)
                seen.add(record_id)
            assert cur_ids[:len(kept_of_raw)] == kept_of_raw
            # ... topped up with kept records from later in the raw order, and nothing else.
            removed = size - len(kept_of_raw)
            assert summary["differing_records"][str(seed)][str(size)] == removed
            later = [r.id for r in raw.subsets.subset(seed, 240) if r.id not in flawed]
            assert set(cur_ids) <= set(later)
            assert len(set(cur_ids)) == size
    # The curated subsets are nested too.
    assert set(r.id for r in curated.subsets.subset(0, 50)) <= set(r.id for r in curated.subsets.subset(0, 100))


def test_independent_draw_is_the_default_and_unpaired(tmp_path):
    plans, _ = _paired_runs(tmp_path, draw="independent")
    (curated, curated_dir), (raw, _) = plans["curated"], plans["raw"]
    assert read_json(curated_dir.plan)["paired_draw"] is None
    overlap = len({r.id for r in curated.subsets.subset(0, 50)} & {r.id for r in raw.subsets.subset(0, 50)})
    assert overlap < 30  # two unrelated draws share about a fifth of their records


def test_paired_draw_needs_raw_sources(tmp_path):
    run_dir = curated_run_dir(tmp_path / "c", make_records(50))
    config = validate_config({"run_dir": str(run_dir.root), "model": {"base": str(tmp_path)},
                              "data": {"heldout_size": 5}, "train": {"sizes": [10], "draw": "paired"}})
    with pytest.raises(ConfigError, match="data.sources is empty"):
        plan_sweep(config, run_dir)


def test_report_shows_the_paired_draw(tmp_path):
    from rich.console import Console

    from curatune.evaluate.report import build_report, render_report

    plans, _ = _paired_runs(tmp_path)
    curated, curated_dir = plans["curated"]
    curated_dir.write_manifest({"name": "paired"}, "train")
    console = Console(record=True, width=200)
    render_report(build_report(curated_dir.root), console)
    text = console.export_text()
    differing = read_json(curated_dir.plan)["paired_draw"]["differing_records"]["0"]
    assert f"seed 0: records differing from the raw subset of the same size: n20: {differing['20']}" in text


def test_raw_data_repairs_empty_turns_as_curation_does(tmp_path, tiny_model_dir):
    """train.data = raw must not train on an empty assistant turn: the exchange around an empty turn
    goes (curate/turns.py repair_empty_turns), and a record with no complete exchange left goes."""
    from curatune.curate.turns import repair_empty_turns
    from curatune.rundir import RunDir

    def chat(*texts):
        return {"messages": [{"role": ("user", "assistant")[i % 2], "content": t} for i, t in enumerate(texts)]}

    rows = [chat(f"Say {i}", f"{i}") for i in range(26)]
    rows.append(chat("Name a colour.", "Red.", "Another?", ""))  # empty last answer: its exchange goes
    rows.append(chat("Hi", "", "Name a fruit.", "Apple."))  # empty first answer: its exchange goes
    rows.append(chat("", "orphan answer", "q", ""))  # nothing complete is left: the record goes
    path = tmp_path / "raw.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    run_dir = RunDir(tmp_path / "run")
    config = validate_config({
        "run_dir": str(run_dir.root), "model": {"base": str(tiny_model_dir)},
        "data": {"sources": [{"path": str(path)}], "heldout_size": 4},
        "train": {"data": "raw", "sizes": [10, 24]},
    })
    plan = plan_sweep(config, run_dir)
    records = plan.subsets.pool + frame_to_records(pd.read_parquet(run_dir.heldout))
    assert len(records) == 28 and plan.pool_size == 24  # 29 rows, one left out
    assert all(m["content"].strip() for r in records for m in r.messages)
    texts = {tuple(m["content"] for m in r.messages) for r in records}
    assert ("Name a colour.", "Red.") in texts and ("Name a fruit.", "Apple.") in texts
    assert all(repair_empty_turns(r) is None for r in records)
    assert any("2 records had empty turns" in n and "1 had no complete exchange" in n for n in read_json(run_dir.plan)["notes"])
