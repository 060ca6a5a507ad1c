from __future__ import annotations

from curatune.config import validate_config
from curatune.run import demo_config, run_all
from curatune.testing.fixture_run import build_fixture_run


def test_run_all_report_stage_on_a_finished_run(tmp_path, capsys):
    root = tmp_path / "run"
    build_fixture_run(root, n_bootstrap=10)
    cfg = validate_config({"run_dir": str(root)})
    timings = run_all(cfg, stages=("report",))
    assert set(timings) == {"report"}


def test_demo_configs_are_valid_and_sized(tmp_path):
    quick = validate_config(demo_config(tmp_path, quick=True))
    full = validate_config(demo_config(tmp_path, quick=False))
    assert quick.train.methods == full.train.methods == ["lora", "full"]
    assert len(quick.train.sizes) < len(full.train.sizes)
    assert quick.evaluate.limit_heldout < full.evaluate.limit_heldout
    assert quick.model.base == "default"
