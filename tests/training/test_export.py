"""`python -m training.export` on a fake finished version built from the tiny Llama; the GGUF
export against a stand-in for Unsloth that does what Unsloth 2026.10.9's source does; and the
Unsloth backend, in its own process, where a CUDA GPU with Unsloth is present."""

import importlib.machinery
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
import torch

from training.export import EXPORT_FILE, main

REPO = Path(__file__).resolve().parents[2]

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


def fake_llama_cpp(folder: Path, quantizer: str = "llama-quantize", converter: bool = True) -> Path:
    """A llama.cpp folder as Unsloth looks for it: a quantizer that answers --help, the converter
    and its conversion/ package at the top."""
    folder.mkdir(parents=True, exist_ok=True)
    if quantizer:
        binary = folder / quantizer
        binary.write_text("#!/bin/sh\necho 'usage: llama-quantize [options] model-f32.gguf [model-quant.gguf] type'\n")
        binary.chmod(0o755)
    if converter:
        (folder / "convert_hf_to_gguf.py").write_text("# llama.cpp's converter\n")
        (folder / "conversion").mkdir(exist_ok=True)
        (folder / "conversion" / "__init__.py").write_text("")
        (folder / "conversion" / "base.py").write_text("")
    return folder


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message on a machine without CUDA")
def test_gguf_without_cuda_or_llama_cpp_says_what_to_do(runs_dir, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(tmp_path / "llama.cpp"))
    assert main(["--version", "v1", "--runs_dir", str(runs_dir), "--gguf", "q4_k_m"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: GGUF export needs Unsloth on a CUDA GPU and llama.cpp")
    assert "no CUDA GPU" in err and f"llama.cpp is not at {tmp_path / 'llama.cpp'}" in err
    assert "convert_hf_to_gguf.py" in err and "git clone" in err and "UNSLOTH_LLAMA_CPP_PATH" in err
    assert not (runs_dir / "v1" / "gguf").exists() and not list((runs_dir / "v1").glob(".gguf*"))

    # With llama.cpp in place only the GPU is missing, and the message says only that.
    fake_llama_cpp(tmp_path / "llama.cpp")
    assert main(["--version", "v1", "--runs_dir", str(runs_dir), "--gguf", "q4_k_m"]) == 2
    err = capsys.readouterr().err
    assert "no CUDA GPU" in err and "llama.cpp is not at" not in err and "git clone" not in err


def test_llama_cpp_lookup_matches_unsloths(tmp_path, monkeypatch):
    from training.gguf import llama_cpp_dir, missing_llama_cpp

    monkeypatch.delenv("UNSLOTH_LLAMA_CPP_PATH", raising=False)
    assert llama_cpp_dir() == Path.home() / ".unsloth" / "llama.cpp"
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(tmp_path / "mine"))
    assert llama_cpp_dir() == tmp_path / "mine"

    assert missing_llama_cpp(fake_llama_cpp(tmp_path / "complete")) == []
    assert missing_llama_cpp(fake_llama_cpp(tmp_path / "old-name", quantizer="quantize")) == []

    # A cmake build leaves the binary in build/bin, where Unsloth does not look.
    built = fake_llama_cpp(tmp_path / "built", quantizer="")
    fake_llama_cpp(built / "build" / "bin", converter=False)
    assert missing_llama_cpp(built) == [f"no working llama-quantize in {built} (there is "
                                        f"{built / 'build' / 'bin' / 'llama-quantize'}: Unsloth does not "
                                        "look in build/bin, link it to the top)"]  # fmt: skip

    not_executable = fake_llama_cpp(tmp_path / "not-executable")
    (not_executable / "llama-quantize").chmod(0o644)
    assert missing_llama_cpp(not_executable) == [f"no working llama-quantize in {not_executable}"]

    no_converter = fake_llama_cpp(tmp_path / "no-converter", converter=False)
    assert missing_llama_cpp(no_converter) == [f"no convert_hf_to_gguf.py in {no_converter}"]

    lone_converter = fake_llama_cpp(tmp_path / "lone-converter")
    shutil.rmtree(lone_converter / "conversion")
    assert "neither its conversion/ nor its gguf-py/" in missing_llama_cpp(lone_converter)[0]
    (lone_converter / "gguf-py" / "gguf").mkdir(parents=True)
    (lone_converter / "gguf-py" / "gguf" / "__init__.py").write_text("")  # a pre-split llama.cpp: also complete
    assert missing_llama_cpp(lone_converter) == []


class FakeUnslothModel:
    """What `FastLanguageModel.from_pretrained(adapter_dir, load_in_4bit=False)` returns, reduced
    to the one method the export calls. `save_pretrained_gguf` does on disk what
    unsloth/save.py (2026.10.9) does: `unsloth_save_pretrained_gguf` merges into
    `save_directory` ("Unsloth: Merging model weights to 16-bit format"), sets
    `gguf_directory = _gguf_output_directory(save_directory)` = `f"{save_directory}_gguf"`;
    `save_to_gguf` converts to the model's dtype with a bare `--outfile`, which lands in the
    working directory, `shutil.move`s it into gguf_directory, quantizes to
    `f"{model_name}.{quant_method.upper()}.gguf"` there and deletes the first file when it was
    not asked for; then a `Modelfile` is written beside them and it returns
    {"save_directory", "gguf_directory", "gguf_files", "modelfile_location", ...}."""

    calls: list[dict] = []

    def __init__(self, base: str, fail: type[BaseException] | None = None):
        self.base, self.fail = base, fail

    def save_pretrained_gguf(self, save_directory, tokenizer=None, quantization_method="fast_quantized"):
        save_directory = os.path.normpath(os.fspath(save_directory))
        gguf_directory = f"{save_directory}_gguf"
        os.makedirs(save_directory, exist_ok=True)
        (Path(save_directory) / "config.json").write_text(json.dumps({"_name_or_path": self.base}))
        (Path(save_directory) / "model.safetensors").write_bytes(b"\0" * 4096)  # the 16-bit merge
        model_name = os.path.basename(self.base)
        first = f"{model_name}.BF16.gguf"  # relative: lands in the working directory
        Path(first).write_bytes(b"GGUF" + b"\0" * 64)
        if self.fail:
            raise self.fail("Unsloth: GGUF conversion failed: llama-quantize exited with code 1")
        os.makedirs(gguf_directory, exist_ok=True)
        first = shutil.move(first, os.path.join(gguf_directory, first))
        quantized = os.path.join(gguf_directory, f"{model_name}.{quantization_method.upper()}.gguf")
        Path(quantized).write_bytes(b"GGUF" + b"\1" * 32)
        os.unlink(first)  # want_full_precision is False: bf16 was not asked for
        modelfile = os.path.join(gguf_directory, "Modelfile")
        Path(modelfile).write_text(f"FROM ./{os.path.basename(quantized)}\n")
        self.calls.append({"cwd": os.getcwd(), "save_directory": save_directory})
        return {
            "save_directory": save_directory,
            "gguf_directory": gguf_directory,
            "gguf_files": [quantized],
            "modelfile_location": modelfile,
            "want_full_precision": False,
            "is_vlm": False,
            "fix_bos_token": False,
        }


@pytest.fixture
def fake_unsloth(monkeypatch, tmp_path):
    """A CUDA machine with Unsloth and llama.cpp, as far as the export can tell: the GPU library
    is replaced, the product's code runs unchanged."""
    loads = []

    class FastLanguageModel:
        fail = None

        @staticmethod
        def from_pretrained(model_name, load_in_4bit=True, **kwargs):
            config = json.loads((Path(model_name) / "adapter_config.json").read_text())
            loads.append({"model_name": model_name, "load_in_4bit": load_in_4bit, "adapter_config": config})
            return FakeUnslothModel(config["base_model_name_or_path"], FastLanguageModel.fail), object()

    module = types.ModuleType("unsloth")
    module.__spec__ = importlib.machinery.ModuleSpec("unsloth", loader=None)
    module.FastLanguageModel = FastLanguageModel
    monkeypatch.setitem(sys.modules, "unsloth", module)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("UNSLOTH_LLAMA_CPP_PATH", str(fake_llama_cpp(tmp_path / "llama.cpp")))
    monkeypatch.chdir(tmp_path)  # where a stray first conversion would show
    FakeUnslothModel.calls.clear()
    FastLanguageModel.loads = loads
    return FastLanguageModel


def test_gguf_lands_in_the_output_folder_and_nothing_else_stays(runs_dir, tiny_model_dir, fake_unsloth, tmp_path):
    out = tmp_path / "exports" / "v1-gguf"
    assert main(["--version", "v1", "--runs_dir", str(runs_dir), "--gguf", "q4_k_m", "--out", str(out)]) == 0

    name = tiny_model_dir.name
    assert sorted(p.name for p in out.iterdir()) == sorted([f"{name}.Q4_K_M.gguf", "Modelfile", EXPORT_FILE])
    assert (out / f"{name}.Q4_K_M.gguf").read_bytes().startswith(b"GGUF")
    assert json.loads((out / EXPORT_FILE).read_text())["format"] == "gguf-q4_k_m"
    assert sorted(p.name for p in out.parent.iterdir()) == ["v1-gguf"]  # no .partial, no *_gguf sibling
    assert not list(tmp_path.glob("*.gguf"))  # the first conversion ran inside the scratch folder

    (load,) = fake_unsloth.loads
    assert load["load_in_4bit"] is False  # the merge is into 16-bit weights
    assert load["adapter_config"]["base_model_name_or_path"] == str(tiny_model_dir)
    (call,) = FakeUnslothModel.calls
    scratch = out.parent / ".v1-gguf.partial" / ".unsloth"
    assert Path(call["cwd"]) == Path(call["save_directory"]).parent == scratch


def test_gguf_default_folder_is_the_versions_gguf(runs_dir, fake_unsloth):
    assert main(["--version", "v1", "--runs_dir", str(runs_dir), "--gguf", "q8_0"]) == 0
    gguf = runs_dir / "v1" / "gguf"
    assert sorted(p.suffix for p in gguf.iterdir()) == ["", ".gguf", ".json"]  # Modelfile, the model, export.json
    assert not (gguf / "model.safetensors").exists() and not (gguf / "config.json").exists()
    assert not [p for p in (runs_dir / "v1").iterdir() if "gguf" in p.name and p != gguf]
    shutil.rmtree(gguf)


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_failed_gguf_export_leaves_no_merge_behind(runs_dir, fake_unsloth, tmp_path, failure):
    fake_unsloth.fail = failure
    out = tmp_path / "gguf"
    with pytest.raises(failure, match="GGUF conversion failed"):
        main(["--version", "v1", "--runs_dir", str(runs_dir), "--gguf", "q4_k_m", "--out", str(out)])
    assert not out.exists() and not list(tmp_path.glob("*.gguf"))
    left = [p for p in tmp_path.rglob("*") if "llama.cpp" not in p.parts]
    # An error removes the partial folder; Ctrl-C leaves it (the next export clears it) but empty.
    assert left == ([] if failure is RuntimeError else [tmp_path / ".gguf.partial"])


def test_push_offline_fails_with_a_message(runs_dir, monkeypatch, capsys):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    args = ["--version", "v1", "--runs_dir", str(runs_dir), "--push_to_hub", "someone/ada-v1"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "error: could not push" in err and "someone/ada-v1" in err
    assert "offline" in err and "Traceback" not in err


# Run in a process of its own: `import unsloth` patches transformers' Llama classes and TRL's
# SFTTrainer for the rest of the process, which would change every test after it.
LOAD_UNSLOTH = """
import sys

import unsloth  # noqa: F401  (first, as training.train does)
import torch

from training.config import TrainConfig
from training.unsloth_backend import load_unsloth

cfg = TrainConfig(
    model={"name": sys.argv[1], "max_seq_length": 64},
    lora={"r": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
)
model, tokenizer = load_unsloth(cfg)
trainable = [name for name, p in model.named_parameters() if p.requires_grad]
assert trainable and all("lora_" in name for name in trainable), trainable
ids = tokenizer("Hello there", return_tensors="pt").input_ids.to(model.device)
with torch.no_grad():
    out = model(input_ids=ids).logits
assert out.shape[:2] == ids.shape and torch.isfinite(out).all(), out
print("load_unsloth ok")
"""


def test_load_unsloth_on_gpu(tiny_model_dir):
    if not torch.cuda.is_available():
        pytest.skip("Unsloth needs a CUDA GPU (its import raises without one)")
    if importlib.util.find_spec("unsloth") is None:  # find_spec: importing it here would patch this process
        pytest.skip("Unsloth is not installed")
    done = subprocess.run(
        [sys.executable, "-c", LOAD_UNSLOTH, str(tiny_model_dir)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0 and "load_unsloth ok" in done.stdout, done.stdout[-4000:] + done.stderr[-4000:]
    assert "unsloth" not in sys.modules
