"""`python -m engines.serve`: the command for each engine, built without the engines installed."""

import json
from pathlib import Path

import pytest
import yaml

from core.errors import ConfigError
from core.versions import VERSION_FILE, list_versions
from engines import serve


def make_version(runs: Path, name: str, r: int = 16, load_in_4bit: bool = False, base: str = "default") -> Path:
    run = runs / name
    (run / "adapter").mkdir(parents=True)
    (run / "adapter" / "adapter_config.json").write_text(json.dumps({"r": r, "peft_type": "LORA"}))
    (run / "config.yaml").write_text(yaml.safe_dump({"model": {"load_in_4bit": load_in_4bit}}))
    (run / VERSION_FILE).write_text(json.dumps({"base_model": base, "created": f"2026-12-01T10:0{r % 10}:00"}))
    return run


@pytest.fixture
def runs(tmp_path) -> Path:
    runs = tmp_path / "runs"
    make_version(runs, "v1", r=16)
    make_version(runs, "v2", r=24)
    return runs


def versions(runs, names=None):
    return serve.select(list_versions(runs), names)


def test_vllm_serves_every_version_as_a_lora_module(runs):
    cmd = serve.vllm_command("/models/base", versions(runs), "127.0.0.1", 8011)
    assert cmd[:3] == ["vllm", "serve", "/models/base"]
    at = cmd.index("--lora-modules")
    assert sorted(cmd[at + 1 : at + 3]) == [f"v1={runs / 'v1' / 'adapter'}", f"v2={runs / 'v2' / 'adapter'}"]
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "32"  # r 24 -> vLLM's next rank


def test_vllm_refuses_a_qlora_adapter_with_the_fix(runs):
    make_version(runs, "q1", load_in_4bit=True)
    make_version(runs, "q2", base="unsloth/llama-3-8b-Instruct-bnb-4bit")
    for name in ("q1", "q2"):
        with pytest.raises(ConfigError, match="QLoRA") as err:
            serve.vllm_command("/models/base", versions(runs, name), "127.0.0.1", 8011)
        assert "16-bit" in err.value.fix and "training.export" in err.value.fix


def test_llamacpp_runs_one_server_per_version_with_its_gguf_adapter(runs, tmp_path):
    with pytest.raises(ConfigError, match="GGUF LoRA") as err:
        serve.llamacpp_commands(["llama-server"], tmp_path / "base.gguf", versions(runs, "v1"), "127.0.0.1", 8011, 4)
    assert "convert_lora_to_gguf.py" in err.value.fix
    (runs / "v1" / serve.ADAPTER_GGUF).write_text("gguf")
    base, v1 = serve.llamacpp_commands(
        ["llama-server"], tmp_path / "base.gguf", versions(runs, "v1"), "127.0.0.1", 8011, 4
    )
    assert base[:3] == ["llama-server", "-m", str(tmp_path / "base.gguf")] and "--lora" not in base
    assert base[base.index("--port") + 1] == "8011" and base[base.index("--parallel") + 1] == "4"
    assert v1[v1.index("--port") + 1] == "8012" and v1[v1.index("--alias") + 1] == "v1"
    assert v1[v1.index("--lora") + 1] == str(runs / "v1" / serve.ADAPTER_GGUF)
    python_server = serve.llamacpp_commands(["python", "-m", "llama_cpp.server"], tmp_path / "b.gguf", [], "h", 1, 4)
    assert "--model_alias" in python_server[0] and "--n_ctx" in python_server[0]


def test_dry_run_prints_the_command_and_starts_nothing(runs, capsys, monkeypatch):
    monkeypatch.setattr(serve.subprocess, "Popen", lambda *a, **k: pytest.fail("started a process"))
    assert serve.main(["--engine", "transformers", "--runs_dir", str(runs), "--port", "8123", "--dry_run", "true"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "nice -n 10 transformers serve --host 127.0.0.1 --port 8123 --continuous-batching"
    assert "# python app.py --model default --engine_url http://127.0.0.1:8123/v1" in out
    assert any("cannot load a LoRA adapter folder" in line and "v1" in line for line in out)

    assert serve.main(["--engine", "vllm", "--runs_dir", str(runs), "--versions", "v1", "--dry_run", "true"]) == 0
    first = capsys.readouterr().out.splitlines()[0]
    assert (
        first.startswith("nice -n 10 vllm serve ") and f"v1={runs / 'v1' / 'adapter'}" in first and "v2=" not in first
    )


def test_nice_0_runs_the_server_as_this_shell(runs, capsys):
    assert serve.main(["--engine", "transformers", "--runs_dir", str(runs), "--nice", "0", "--dry_run", "true"]) == 0
    assert capsys.readouterr().out.startswith("transformers serve ")


def test_unknown_version_and_missing_llama_server_are_clear_errors(runs, capsys, monkeypatch):
    assert serve.main(["--engine", "vllm", "--runs_dir", str(runs), "--versions", "nope", "--dry_run", "true"]) == 2
    assert "no such version: nope" in capsys.readouterr().err
    monkeypatch.setattr(serve, "llama_server", lambda: None)
    assert serve.main(["--engine", "llamacpp", "--runs_dir", str(runs), "--dry_run", "true"]) == 2
    assert "llama-cpp-python[server]" in capsys.readouterr().err
    assert serve.pick_engine("auto") in ("vllm", "transformers")  # no llama.cpp server here
