"""Cells on a local Ray instance and through `accelerate launch` (tiny model, CPU)."""
from __future__ import annotations

import shutil

import pytest

from curatune.rundir import read_json
from curatune.rundir import list_cells
from curatune.train.sweep import launch_command, run_sweep, uses_launcher
from train_helpers import curated_run_dir, make_records, tiny_config


@pytest.mark.slow
def test_ray_executor_runs_every_cell_on_a_local_ray_instance(tmp_path, tiny_model_dir):
    ray = pytest.importorskip("ray", reason="Ray not installed (pip install 'curatune[ray]')")
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4, 8], methods=["lora", "full"])
    # a finished cell is skipped by the driver, not sent to Ray
    summary = run_sweep(config, run_dir, only=["full"], progress=False)
    assert summary["ran"] == ["full-n4-s0", "full-n8-s0"]
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        summary = run_sweep(config, run_dir, executor="ray", progress=False)
    finally:
        ray.shutdown()
    assert sorted(summary["ran"]) == ["lora-n4-s0", "lora-n8-s0"]
    assert summary["already_done"] == ["full-n4-s0", "full-n8-s0"]
    assert not summary["failed"]
    for cell in list_cells(run_dir):
        assert cell.status == "done"
        assert (cell.path / "final").is_dir() and (cell.path / "early").is_dir()
    assert read_json(run_dir.cell("lora", 8, 0) / "done.json")["steps"] == 4


def test_launcher_command_is_accelerate_launch_of_the_cell_entry_point(tmp_path, tiny_model_dir):
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir)
    assert not uses_launcher(config)
    cfg_file = tmp_path / "ddp.yaml"
    cfg_file.write_text("distributed_type: MULTI_GPU\nnum_processes: 2\n")
    config.train.launch.accelerate_config = str(cfg_file)
    config.train.launch.num_processes = 2
    assert uses_launcher(config)
    from curatune.rundir import CellSpec

    cmd = launch_command(config, run_dir, CellSpec("lora", 4, 0))
    assert cmd[1:3] == ["-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--config_file") + 1] == str(cfg_file)
    assert cmd[cmd.index("--num_processes") + 1] == "2"
    assert cmd[-10:] == ["-m", "curatune.train.cell_main", "--run-dir", str(run_dir.root),
                         "--method", "lora", "--size", "4", "--seed", "0"]


@pytest.mark.slow
def test_cell_runs_through_accelerate_launch(tmp_path, tiny_model_dir):
    if shutil.which("accelerate") is None:
        pytest.skip("accelerate CLI not installed")
    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[4], methods=["lora"])
    cfg_file = tmp_path / "cpu.yaml"
    cfg_file.write_text("compute_environment: LOCAL_MACHINE\ndistributed_type: 'NO'\nuse_cpu: true\n"
                        "num_machines: 1\nnum_processes: 1\nmixed_precision: 'no'\n")
    config.train.launch.accelerate_config = str(cfg_file)
    summary = run_sweep(config, run_dir, progress=False)
    assert summary["ran"] == ["lora-n4-s0"], summary
    done = read_json(run_dir.cell("lora", 4, 0) / "done.json")
    assert done["weights"]["final"] == "final" and done["steps"] == 2


@pytest.mark.slow
def test_cell_entry_point_under_two_process_ddp(tmp_path, tiny_model_dir):
    """What `accelerate launch` runs, under torchrun with 2 CPU processes (gloo): rank 0 alone
    writes the cell, both ranks share the data (half the optimizer steps of one process)."""
    import os
    import subprocess
    import sys

    from curatune.train.plan import plan_sweep

    run_dir = curated_run_dir(tmp_path / "run", make_records(20))
    config = tiny_config(run_dir, tiny_model_dir, sizes=[8], methods=["lora"])
    plan_sweep(config, run_dir)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29561",
         "-m", "curatune.train.cell_main", "--run-dir", str(run_dir.root), "--method", "lora",
         "--size", "8", "--seed", "0"],
        capture_output=True, text=True, timeout=300, env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    done = read_json(run_dir.cell("lora", 8, 0) / "done.json")
    assert done["world_size"] == 2 and done["steps"] == 2  # 8 examples / (2 per device x 2 ranks)
    assert (run_dir.cell("lora", 8, 0) / "final" / "adapter_model.safetensors").exists()
    assert [line["step"] for line in list_cells(run_dir)[0].log()] == [1, 2]
