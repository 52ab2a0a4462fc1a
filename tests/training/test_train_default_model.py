"""End-to-end fine-tuning of the real default model on the shared Synthetic-Persona-Chat
CSV, and a 2-process (gloo) run under `accelerate launch` on CPU."""

import json
import subprocess
import sys

import pytest
import torch

from core.conversation import build_messages
from core.persona import load_persona
from engines.config import EngineConfig, GenerationSettings
from engines.factory import load_engine
from tests.conftest import REPO

pytestmark = pytest.mark.slow


def test_short_run_changes_the_default_model(default_engine, spc_csv, tmp_path):
    from training.train import main

    runs = tmp_path / "runs"
    args = ["--model.name", "default", "--data.path", str(spc_csv), "--data.limit", "4",
            "--data.max_history_turns", "2",
            "--max_steps", "3", "--sft.per_device_train_batch_size", "2", "--sft.learning_rate", "1e-3",
            "--sft.warmup_steps", "0", "--model.max_seq_length", "192", "--validation.max_examples", "4",
            "--sft.eval_steps", "3", "--output.dir", str(runs), "--output.version", "tiny-tune"]  # fmt: skip
    assert main(args) == 0
    metrics = json.loads((runs / "tiny-tune" / "metrics.json").read_text())
    assert metrics["steps"] == 3 and metrics["final_eval_loss"] != metrics["base_eval_loss"]
    tuned = load_engine(EngineConfig(model="tiny-tune", runs_dir=str(runs)))
    ids = torch.tensor([[1, 504, 3458, 28, 2]])
    assert not torch.allclose(tuned.model(ids).logits, default_engine.model(ids).logits)
    greedy = GenerationSettings(temperature=0, max_new_tokens=24)
    messages = build_messages(load_persona(REPO / "personas" / "sam.yaml"), [], "What do you do for fun?")
    assert tuned.generate([messages], greedy) != default_engine.generate([messages], greedy)


def test_two_process_cpu_run_trains_and_saves_once(tiny_model_dir, tmp_path):
    runs = tmp_path / "runs"
    # accelerate's "multi_gpu" launcher is torchrun; on a machine without CUDA the ranks use gloo.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_cpu_threads_per_process", "1", "-m", "training.train", "--device", "cpu",
           "--config", str(REPO / "training/recipes/tiny-test.yaml"), "--model.name", str(tiny_model_dir),
           "--output.dir", str(runs)]  # fmt: skip
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "distributed over 2 processes" in result.stderr + result.stdout
    versions = [p for p in runs.iterdir()]
    assert len(versions) == 1 and (versions[0] / "version.json").is_file()  # one folder, both ranks agreed
    assert (versions[0] / "adapter" / "adapter_model.safetensors").is_file()
    load_engine(EngineConfig(model=str(tiny_model_dir), adapter=str(versions[0] / "adapter")))
