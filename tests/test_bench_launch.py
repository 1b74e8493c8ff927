"""The pure part of benchmarks/bench_launch.py: each launcher's command trains the same posts per optimizer step."""

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
_spec = importlib.util.spec_from_file_location("bench_launch", ROOT / "benchmarks" / "bench_launch.py")
bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench)


def flag(cmd: list[str], name: str, default=None):
    """The last value of `--name` in `cmd` (the last one wins in TrlParser), else `default`."""
    values = [cmd[i + 1] for i, arg in enumerate(cmd[:-1]) if arg == f"--{name}"]
    return values[-1] if values else default


@pytest.mark.parametrize("name", list(bench.VARIANTS))
def test_every_launcher_takes_the_recipes_posts_per_step_on_its_threads(name, tmp_path):
    recipe = yaml.safe_load(bench.RECIPE.read_text())
    cmd, env = bench.command(name, tmp_path / "data", tmp_path / "out", seed=3, max_steps=None)
    launched = "accelerate.commands.launch" in cmd  # its process count is in its config file
    processes = yaml.safe_load(Path(flag(cmd, "config_file")).read_text())["num_processes"] if launched else 1
    per_device = int(flag(cmd, "per_device_train_batch_size", recipe["per_device_train_batch_size"]))
    assert processes * per_device == recipe["per_device_train_batch_size"]
    assert processes == bench.VARIANTS[name][0]
    assert int(env["OMP_NUM_THREADS"]) * processes == 2  # two cores, never oversubscribed
    assert flag(cmd, "seed") == "3" and flag(cmd, "ndcg_eval_posts") == "0"
