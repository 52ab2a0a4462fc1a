"""`python -m training.export` on a fake finished version built from the tiny Llama, and the
Unsloth backend where a CUDA GPU with Unsloth is present."""

import json

import pytest
import torch

from training.export import EXPORT_FILE, main

INPUT_IDS = torch.tensor([[1, 42, 7, 300, 99, 5]])


@pytest.fixture(scope="module")
def runs_dir(tmp_path_factory, tiny_model_dir):
    """`runs/v1/` as training leaves it: an adapter that changes the outputs, and version.json."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    runs = tmp_path_factory.mktemp("runs")
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(1)
    # init_lora_weights=False: B is random rather than zero, so the adapter is not a no-op.
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(runs / "v1" / "adapter")
    (runs / "v1" / "version.json").write_text(
        json.dumps({"base_model": str(tiny_model_dir), "created": "2025-01-01T00:00:00"})
    )
    return runs


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(INPUT_IDS).logits


def test_merged_folder_matches_base_plus_adapter(runs_dir, tiny_model_dir, capsys):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    assert main(["--version", "v1", "--runs_dir", str(runs_dir)]) == 0
    merged_dir = runs_dir / "v1" / "merged"
    assert str(merged_dir) in capsys.readouterr().out
    assert (merged_dir / "model.safetensors").is_file()
    assert (merged_dir / "tokenizer_config.json").is_file()
    assert not (merged_dir / "adapter_config.json").exists()
    assert json.loads((merged_dir / EXPORT_FILE).read_text())["version"] == "v1"
    assert not list(runs_dir.glob("v1/.*partial"))

    merged = AutoModelForCausalLM.from_pretrained(merged_dir, dtype=torch.float32).eval()
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    base_logits = logits(base)
    unmerged = PeftModel.from_pretrained(base, runs_dir / "v1" / "adapter").eval()
    assert torch.allclose(logits(merged), logits(unmerged), atol=1e-5)
    assert not torch.allclose(logits(merged), base_logits, atol=1e-3)

    # A second export replaces the first (it carries export.json, so it is ours to replace).
    assert main(["--version", "v1", "--runs_dir", str(runs_dir)]) == 0


def test_out_that_is_not_an_export_is_left_alone(runs_dir, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("keep me")
    assert main(["--version", "v1", "--runs_dir", str(runs_dir), "--out", str(tmp_path)]) == 2
    assert "is not an earlier export" in capsys.readouterr().err
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_killed_export_leaves_nothing_that_looks_complete(runs_dir, tmp_path, monkeypatch):
    import training.export

    def killed_while_saving(version, out):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt  # like Ctrl-C: not cleaned up, as after a kill

    monkeypatch.setattr(training.export, "merge_into", killed_while_saving)
    with pytest.raises(KeyboardInterrupt):
        main(["--version", "v1", "--runs_dir", str(runs_dir), "--out", str(tmp_path / "merged")])
    assert not (tmp_path / "merged").exists()
    assert not (tmp_path / ".merged.partial" / EXPORT_FILE).exists()


def test_unknown_version_lists_the_trained_ones(runs_dir, capsys):
    assert main(["--version", "v9", "--runs_dir", str(runs_dir)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no trained version 'v9'")
    assert "v1" in err and "Traceback" not in err
    assert main(["--runs_dir", str(runs_dir)]) == 2
    assert "--version is required" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gguf_without_cuda_says_what_to_do(runs_dir, capsys):
    assert main(["--version", "v1", "--runs_dir", str(runs_dir), "--gguf", "q4_k_m"]) == 2
    err = capsys.readouterr().err
    assert "GGUF export needs Unsloth on a CUDA GPU" in err
    assert "convert_hf_to_gguf.py" in err
    assert not (runs_dir / "v1" / "gguf").exists()


def test_push_offline_fails_with_a_message(runs_dir, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = ["--version", "v1", "--runs_dir", str(runs_dir), "--push_to_hub", "someone/ada-v1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: could not push" in err and "someone/ada-v1" in err
    assert "offline" in err and "Traceback" not in err


def test_load_unsloth_on_gpu(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("Unsloth needs a CUDA GPU (its import raises without one)")
    pytest.importorskip("unsloth", reason="Unsloth is not installed")
    from training.config import TrainConfig
    from training.unsloth_backend import load_unsloth

    cfg = TrainConfig(
        model={"name": str(tiny_model_dir), "max_seq_length": 64},
        lora={"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
    )
    model, tokenizer = load_unsloth(cfg)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    ids = tokenizer("Hello there", return_tensors="pt").input_ids.to(model.device)
    with torch.no_grad():
        out = model(input_ids=ids).logits
    assert out.shape[:2] == ids.shape and torch.isfinite(out).all()
