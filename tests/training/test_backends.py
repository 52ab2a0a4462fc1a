"""Backend choice and model loading, with the GPU-only paths faked where a CPU cannot run them."""

import importlib.util

import pytest
import torch

from core.errors import ConfigError
from training import backends
from training.config import TrainConfig
from training.train import main


@pytest.fixture
def cuda_without_unsloth(monkeypatch):
    """A CUDA machine on which unsloth is not installed."""
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "unsloth" else find_spec(name, *a)
    )


def test_unsloth_requested_but_not_installed_says_what_to_install(cuda_without_unsloth, tmp_path, capsys):
    with pytest.raises(ConfigError, match="Unsloth is not installed"):
        backends.resolve_backend(TrainConfig(backend="unsloth"))
    assert backends.resolve_backend(TrainConfig()) == "trl"  # auto falls back quietly
    assert main(["--backend", "unsloth", "--output.dir", str(tmp_path)]) == 2
    assert "fix: pip install unsloth" in capsys.readouterr().err


def test_cuda_loads_go_straight_to_this_process_gpu(monkeypatch):
    # `auto` resolves to cuda (faking torch.cuda itself would send bitsandbytes looking for kernels).
    monkeypatch.setattr(backends, "pick_device", lambda device: "cuda" if device == "auto" else device)
    monkeypatch.delenv("LOCAL_RANK", raising=False)
    assert backends.device_map(TrainConfig()) == {"": "cuda:0"}
    assert backends.device_map(TrainConfig(device="cuda:1")) == {"": "cuda:1"}
    assert backends.device_map(TrainConfig(device="cpu")) is None
    monkeypatch.setenv("LOCAL_RANK", "3")  # the fourth process of `accelerate launch`
    assert backends.device_map(TrainConfig()) == {"": "cuda:3"}

    seen = {}
    monkeypatch.setattr(backends, "from_pretrained", lambda *args, **kwargs: seen.update(kwargs) or (None, None))
    backends.load_trl(TrainConfig())
    assert seen == {"device_map": {"": "cuda:3"}}  # full precision: no quantization_config


def test_cpu_loads_keep_transformers_placement(monkeypatch):
    seen = {}
    monkeypatch.setattr(backends, "from_pretrained", lambda *args, **kwargs: seen.update(kwargs) or (None, None))
    backends.load_trl(TrainConfig(device="cpu"))
    assert seen == {}


def test_parameter_count_of_a_4bit_model_is_not_halved(tiny_model_dir):
    pytest.importorskip("bitsandbytes")
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, BitsAndBytesConfig

    cfg = TrainConfig.model_validate({"lora": {"r": 4}})
    dense = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    dense_total = sum(p.numel() for p in dense.parameters())
    four_bit = BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_compute_dtype=torch.float32)
    quantized = AutoModelForCausalLM.from_pretrained(tiny_model_dir, quantization_config=four_bit, device_map="cpu")
    model = get_peft_model(quantized, backends.lora_config(cfg))
    trainable, total = backends.trainable_parameters(model)
    assert trainable == sum(p.numel() for p in model.parameters() if p.requires_grad) > 0
    assert total == dense_total + trainable  # every base weight once, though 4-bit ones are stored packed
    assert sum(p.numel() for p in model.parameters()) < total
