"""Loading the real public datasets in ../shared/data/instruct (skipped when absent)."""
from __future__ import annotations

import time

import pytest

from curatune.config import SourceConfig
from curatune.data.loaders import LoadResult, load_path, load_sources

pytestmark = pytest.mark.shared_data


def assert_accounted(result: LoadResult) -> None:
    assert result.input_count == len(result.records) + len(result.rejected)
    assert result.input_count == sum(s["rows"] for s in result.file_stats)
    assert all(s["rows"] == s["kept"] + s["rejected"] for s in result.file_stats)


def test_self_instruct_per_template_files(shared_data):
    folder = shared_data / "instruct/self_instruct/data/finetuning/t0_train_50k/data_per_template"
    start = time.monotonic()
    result = load_path(str(folder / "*.jsonl"), category="{file}")
    seconds = time.monotonic() - start
    assert_accounted(result)
    assert len(result.file_stats) == 294
    assert result.input_count == 55_185
    assert len(result.records) > 55_000
    non_empty = [s for s in result.file_stats if s["rows"]]
    assert {s["format"] for s in non_empty} == {"prompt_completion"}
    # A few template files of the published data are empty: no rows, one warning each.
    empty = len(result.file_stats) - len(non_empty)
    assert sum("no rows (empty file)" in w for w in result.warnings) == empty
    # The template (file stem) is the category: one per file.
    assert len({r.category for r in result.records}) == len(non_empty)
    first = result.records[0]
    assert first.source.endswith("adversarial_qa_dbert_answer_the_following_q.jsonl:1")
    assert first.category == "adversarial_qa_dbert_answer_the_following_q"
    assert seconds < 45, f"loading 55k records took {seconds:.1f}s"


def test_gpteacher_json_arrays(shared_data):
    result = load_path(shared_data / "instruct/gpteacher")
    assert_accounted(result)
    assert result.input_count == 7673 + 4535 + 1923
    assert {s["format"] for s in result.file_stats} == {"gpteacher"}
    assert {s["container"] for s in result.file_stats} == {"json"}
    assert len(result.records) > 0.99 * result.input_count


def test_codealpaca_json(shared_data):
    result = load_path(shared_data / "instruct/codealpaca/data/code_alpaca_2k.json")
    assert_accounted(result)
    assert result.input_count == 2017
    assert result.file_stats[0]["format"] == "alpaca"
    # Two rows of the published file have an empty output.
    assert set(result.rejected["reason"]) <= {"empty_content"}


def test_gsm8k_with_mapping(shared_data):
    source = SourceConfig(
        path=str(shared_data / "instruct/gsm8k/grade_school_math/data/train.jsonl"),
        mapping={"instruction": "question", "output": "answer"},
        category="gsm8k",
    )
    result = load_sources([source])
    assert_accounted(result)
    assert result.input_count == 7473 and len(result.records) == 7473
    record = result.records[0]
    assert record.category == "gsm8k" and "####" in record.response
