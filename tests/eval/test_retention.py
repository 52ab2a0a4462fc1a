import json
import sys

import pytest

from core.errors import ConfigError
from eval.retention import RetentionConfig, compare, format_table, main, retention

LOCAL_METRICS = {("persona_mc", "acc"), ("persona_mc", "acc_norm")}


@pytest.fixture(scope="module")
def tiny_runs(tmp_path_factory, tiny_model_dir):
    """runs/tiny-lora: a trained version of the tiny model whose LoRA weights are random
    (not zero), so the version really differs from its base."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    runs = tmp_path_factory.mktemp("runs")
    run_dir = runs / "tiny-lora"
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(run_dir / "adapter")
    (run_dir / "version.json").write_text(json.dumps({"base_model": str(tiny_model_dir), "created": "2026-01-01"}))
    return runs


def test_tiny_version_against_its_base(tiny_runs, tiny_model_dir):
    result = retention("tiny-lora", limit=8, runs_dir=str(tiny_runs), batch_size=4)
    assert result["base_model"] == str(tiny_model_dir)
    assert result["adapter"] == str(tiny_runs / "tiny-lora" / "adapter")
    assert {(r["task"], r["metric"]) for r in result["rows"]} == LOCAL_METRICS
    for row in result["rows"]:
        assert 0.0 <= row["version"] <= 1.0 and 0.0 <= row["base"] <= 1.0
        assert row["delta"] == pytest.approx(row["version"] - row["base"])
        assert row["n"] == 8
        assert row["version_stderr"] is not None
    assert result["config"]["tasks"] == ["persona_mc"]


def test_cli_prints_a_table_and_writes_json(tiny_runs, tmp_path, capsys):
    out = tmp_path / "retention.json"
    argv = ["--model", "tiny-lora", "--runs_dir", str(tiny_runs), "--tasks", "persona_mc", "--limit", "4"]
    assert main([*argv, "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| persona_mc | acc | 4 |" in printed
    saved = json.loads(out.read_text())
    assert saved["model_version"] == "tiny-lora"
    assert {(r["task"], r["metric"]) for r in saved["rows"]} == LOCAL_METRICS


def test_cli_refuses_an_unknown_version(tmp_path, capsys):
    assert main(["--model", "no-such-version", "--runs_dir", str(tmp_path)]) == 2
    assert "no-such-version" in capsys.readouterr().err


def test_tasks_flag_takes_a_comma_list():
    assert RetentionConfig(tasks="hellaswag, mmlu").tasks == ["hellaswag", "mmlu"]


def test_compare_reads_lm_eval_results():
    def run(acc, stderr):
        return {
            "results": {"persona_mc": {"alias": "persona_mc", "acc,none": acc, "acc_stderr,none": stderr}},
            "n-samples": {"persona_mc": {"original": 32, "effective": 32}},
        }

    (row,) = compare(run(0.75, 0.078), run(0.5, "N/A"))
    assert row == {
        "task": "persona_mc",
        "metric": "acc",
        "version": 0.75,
        "base": 0.5,
        "delta": 0.25,
        "version_stderr": 0.078,
        "base_stderr": None,
        "n": 32,
    }
    assert "| persona_mc | acc | 32 | 0.750 ± 0.078 | 0.500 | +0.250 |" in format_table({"rows": [row]})


def test_missing_lm_eval_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "lm_eval", None)  # `import lm_eval` now raises ImportError
    with pytest.raises(ConfigError, match="pip install lm-eval"):
        retention("base")


@pytest.mark.slow
def test_unknown_task_lists_the_local_ones():
    from eval.retention import task_manager

    with pytest.raises(ConfigError, match="persona_mc"):
        task_manager(["persona_mc", "no_such_task"])


@pytest.mark.slow
def test_default_model_knows_its_general_knowledge(default_model_dir):
    result = retention("default")
    rows = {(r["task"], r["metric"]): r for r in result["rows"]}
    acc = rows["persona_mc", "acc"]
    print(f"default model on persona_mc: acc {acc['base']:.3f} (n={acc['n']}), {result['runtime_s']} s")
    assert acc["n"] == 32
    assert acc["base"] > 0.5  # four choices: chance is 0.25; SmolLM2-135M-Instruct scores ~0.72
    assert result["adapter"] is None and acc["delta"] == 0.0  # no adapter: its own base
