"""format: parallel — aligned plain-text sentence files -> translation records."""
from __future__ import annotations

import bz2
import gzip
import json
import lzma
from pathlib import Path

import pytest

from curatune.config import PARALLEL_INSTRUCTION, SourceConfig, load_config
from curatune.data.loaders import LoadResult, language_code_of, load_path, load_sources, parallel_stem
from curatune.errors import ConfigError, DataError
from curatune.records import LEDGER_COLUMNS, RECORD_COLUMNS

EN = ["A dog runs.", "Two men talk.", "A girl reads a book."]
DE = ["Ein Hund rennt.", "Zwei Männer reden.", "Ein Mädchen liest ein Buch."]


def write(path: Path, lines: list[str] | str, encoding: str = "utf-8") -> Path:
    text = lines if isinstance(lines, str) else "".join(line + "\n" for line in lines)
    data = text.encode(encoding)
    opener = {".gz": gzip.compress, ".bz2": bz2.compress, ".xz": lzma.compress}.get(path.suffix)
    path.write_bytes(opener(data) if opener else data)
    return path


def pair(tmp_path: Path, en: list[str] | str = EN, de: list[str] | str = DE, stem: str = "train", ext: str = "") -> tuple[Path, Path]:
    return write(tmp_path / f"{stem}.en{ext}", en), write(tmp_path / f"{stem}.de{ext}", de)


def assert_accounted(result: LoadResult) -> None:
    assert result.input_count == len(result.records) + len(result.rejected)
    assert result.input_count == sum(s["rows"] for s in result.file_stats)
    assert all(s["rows"] == s["kept"] + s["rejected"] for s in result.file_stats)
    assert list(result.rejected.columns) == RECORD_COLUMNS + LEDGER_COLUMNS


def test_each_line_pair_becomes_a_translation_record(tmp_path):
    en, de = pair(tmp_path)
    result = load_path(en, format="parallel", target_path=de)
    assert_accounted(result)
    assert len(result.records) == 3 and result.rejected.empty
    first = result.records[0]
    assert first.messages == [
        {"role": "user", "content": "Translate the following English text into German.\n\nA dog runs."},
        {"role": "assistant", "content": "Ein Hund rennt."},
    ]
    assert first.category is None
    assert [r.source for r in result.records] == [f"{en}:1", f"{en}:2", f"{en}:3"]
    assert [r.response for r in result.records] == DE
    stats = result.file_stats[0]
    assert stats["format"] == "parallel" and stats["target_path"] == str(de)
    assert stats["rows"] == 3 and stats["encoding"] == "utf-8"


@pytest.mark.parametrize("ext", [".gz", ".bz2", ".xz"])
def test_compressed_files(tmp_path, ext):
    en, de = pair(tmp_path, ext=ext)
    result = load_path(en, format="parallel", target_path=de)
    assert [r.response for r in result.records] == DE
    assert result.records[2].source == f"{en}:3"


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path):
    en, de = pair(tmp_path, de=DE[:2])
    with pytest.raises(DataError) as info:
        load_path(en, format="parallel", target_path=de)
    message = str(info.value)
    assert str(en) in message and str(de) in message
    assert "3 line(s)" in message and "has 2" in message


def test_empty_line_on_either_side_is_rejected_and_keeps_alignment(tmp_path):
    en, de = pair(tmp_path, en=["A dog runs.", "   ", "A girl reads a book.", "Sun."],
                  de=["Ein Hund rennt.", "Zwei Männer reden.", "Ein Mädchen liest ein Buch.", ""])
    result = load_path(en, format="parallel", target_path=de)
    assert_accounted(result)
    assert result.input_count == 4
    assert [r.source for r in result.records] == [f"{en}:1", f"{en}:3"]
    # The pair after the empty line is still aligned.
    assert result.records[1].response == "Ein Mädchen liest ein Buch."
    rejected = result.rejected.set_index("source")
    assert set(rejected["reason"]) == {"empty_content"}
    assert f"{en} line 2 (source)" in rejected.loc[f"{en}:2", "detail"]
    assert f"{de} line 4 (target)" in rejected.loc[f"{en}:4", "detail"]
    assert json.loads(rejected.loc[f"{en}:2", "meta"]) == {"source": "   ", "target": "Zwei Männer reden."}
    assert (result.rejected["step"] == "load").all()
    assert result.rejected_by_reason == {"empty_content": 2}


def test_whitespace_crlf_and_unicode_line_separators(tmp_path):
    # \r\n endings and trailing spaces are stripped; U+2028 inside a sentence does not split it.
    en, de = pair(tmp_path, en="A dog\u2028runs.  \r\nTwo men.\r\n", de=" Ein Hund rennt.\r\nZwei Männer.\r\n")
    result = load_path(en, format="parallel", target_path=de)
    assert result.input_count == 2
    assert result.records[0].messages[0]["content"].endswith("\n\nA dog\u2028runs.")
    assert [r.response for r in result.records] == ["Ein Hund rennt.", "Zwei Männer."]


def test_blank_lines_at_the_end_are_ignored_with_a_warning(tmp_path):
    en, de = pair(tmp_path, en="".join(s + "\n" for s in EN) + "\n\n", de=DE)
    result = load_path(en, format="parallel", target_path=de)
    assert result.input_count == 3 and len(result.records) == 3
    assert any("ignored 2 blank line(s) at the end" in w for w in result.warnings)


def test_no_final_newline_and_empty_files(tmp_path):
    en, de = pair(tmp_path, en="A dog runs.\nTwo men talk.", de="Ein Hund rennt.\nZwei Männer reden.\n")
    assert load_path(en, format="parallel", target_path=de).input_count == 2
    en, de = pair(tmp_path, en="", de="", stem="empty")
    result = load_path(en, format="parallel", target_path=de)
    assert result.input_count == 0 and any("empty file" in w for w in result.warnings)


def test_custom_template_and_language_settings(tmp_path):
    en, de = pair(tmp_path)
    result = load_path(en, format="parallel", target_path=de, source_lang="en", target_lang="Swiss German",
                       instruction="{source_lang} -> {target_lang}: {source} {{literal}}")
    assert result.records[0].prompt == "English -> Swiss German: A dog runs. {literal}"


def test_language_is_guessed_from_suffixes_or_must_be_given(tmp_path):
    src, tgt = write(tmp_path / "src.txt", EN), write(tmp_path / "tgt.txt", DE)
    with pytest.raises(DataError, match="cannot tell the language.*source_lang"):
        load_path(src, format="parallel", target_path=tgt)
    # A template that does not name the languages needs no guess.
    result = load_path(src, format="parallel", target_path=tgt, instruction="Translate: {source}")
    assert result.records[1].prompt == "Translate: Two men talk."
    assert language_code_of("data/train.de.gz") == "de"
    assert language_code_of("news.fr.txt") == "fr"
    assert language_code_of("train.txt") is None


def test_category_and_file_placeholder(tmp_path):
    en, de = pair(tmp_path, ext=".gz")
    result = load_path(en, format="parallel", target_path=de, category="{file}")
    assert {r.category for r in result.records} == {"train"}
    assert parallel_stem("test_2016_flickr.en.gz") == "test_2016_flickr"


def test_legacy_encoding_is_detected_per_file(tmp_path):
    en = write(tmp_path / "a.en", EN)
    de = write(tmp_path / "a.de", DE, encoding="cp1252")
    result = load_path(en, format="parallel", target_path=de)
    assert result.records[1].response == "Zwei Männer reden."
    assert result.file_stats[0]["target_encoding"] == "cp1252"
    assert any("decoded as cp1252" in w for w in result.warnings)


def test_folder_glob_or_missing_file_is_one_clear_error(tmp_path):
    en, de = pair(tmp_path)
    with pytest.raises(DataError, match="needs one file for `path`"):
        load_path(tmp_path, format="parallel", target_path=de)
    with pytest.raises(DataError, match="needs one file for `target_path`"):
        load_path(en, format="parallel", target_path=str(tmp_path / "*.de"))
    with pytest.raises(DataError, match=r"missing\.de: no such file"):
        load_path(en, format="parallel", target_path=tmp_path / "missing.de")


def test_auto_format_on_a_sentence_file_points_to_parallel(tmp_path):
    en, _ = pair(tmp_path)
    with pytest.raises(DataError, match="format: parallel"):
        load_path(en)


def test_mixed_with_other_sources(tmp_path):
    en, de = pair(tmp_path)
    jsonl = tmp_path / "extra.jsonl"
    jsonl.write_text(json.dumps({"instruction": "Say hi", "output": "hi"}) + "\n", encoding="utf-8")
    result = load_sources([SourceConfig(path=str(en), format="parallel", target_path=str(de)),
                           SourceConfig(path=str(jsonl))])
    assert_accounted(result)
    assert result.input_count == 4 and [s["format"] for s in result.file_stats] == ["parallel", "alpaca"]


def test_config_validation(tmp_path):
    cases = [
        ({"format": "parallel"}, "needs target_path"),
        ({"target_path": "b.de"}, "target_path applies only with format: parallel"),
        ({"format": "parallel", "target_path": "b.de", "instruction": "Translate {text}"}, r"unknown placeholder\(s\) \{text\}"),
        ({"format": "parallel", "target_path": "b.de", "instruction": "Translate this."}, "must contain {source}"),
        ({"format": "parallel", "target_path": "b.de", "instruction": "Translate {source"}, "not a valid template"),
        ({"format": "parallel", "target_path": "b.de", "mapping": {"output": "x"}}, "mapping does not apply"),
    ]
    for extra, message in cases:
        config = tmp_path / "c.yaml"
        config.write_text(json.dumps({"data": {"sources": [{"path": "a.en", **extra}]}}), encoding="utf-8")
        with pytest.raises(ConfigError, match=message):
            load_config(config)
    default = SourceConfig(path="a.en", format="parallel", target_path="b.de")
    assert default.instruction is None and default.parallel_instruction() == PARALLEL_INSTRUCTION
    with pytest.raises(ValueError, match="instruction applies only with format: parallel"):
        SourceConfig(path="a.jsonl", instruction="{source}")


def test_config_resolves_target_path_relative_to_the_config_file(tmp_path):
    (tmp_path / "data").mkdir()
    en, de = pair(tmp_path / "data")
    folder = tmp_path / "configs"
    folder.mkdir()
    config = folder / "exp.yaml"
    config.write_text(
        "data:\n  sources:\n    - {path: ../data/train.en, format: parallel, target_path: ../data/train.de}\n"
        "  eval_sources:\n    - {path: ../data/train.en, format: parallel, target_path: ../data/train.de}\n",
        encoding="utf-8",
    )
    cfg = load_config(config)
    for source in cfg.data.sources + cfg.data.eval_sources:
        assert source.path == str(en.resolve()) and source.target_path == str(de.resolve())
    assert len(load_sources(cfg.data.sources).records) == 3


@pytest.mark.shared_data
def test_real_multi30k(shared_data):
    raw = shared_data / "mt/multi30k/data/task1/raw"
    for split, count in (("train", 29_000), ("val", 1_014), ("test_2016_flickr", 1_000)):
        result = load_path(raw / f"{split}.en.gz", format="parallel", target_path=raw / f"{split}.de.gz")
        assert_accounted(result)
        assert result.input_count == count
        assert len(result.records) == count, result.rejected_by_reason
    first = load_path(raw / "train.en.gz", format="parallel", target_path=raw / "train.fr.gz",
                      target_lang="fr").records[0]
    assert first.prompt.startswith("Translate the following English text into French.\n\nTwo young, White males")
    assert first.response.startswith("Deux jeunes hommes blancs")
