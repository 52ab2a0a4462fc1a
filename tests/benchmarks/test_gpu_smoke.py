"""`python -m benchmarks.gpu_smoke --cpu`: the GPU smoke test's CPU-reachable steps run through
the product's entry points on the tiny model and pass (~40 s on 2 cores); the CUDA steps are
skipped with the reason; a failing step fails the run and skips what depends on it."""

import pytest

from benchmarks import gpu_smoke


def test_cpu_steps_pass_and_cuda_steps_say_why_not(tmp_path, spc_csv, capsys):
    assert gpu_smoke.main(["--cpu", "--work", str(tmp_path), "--prepared", str(tmp_path / "not-prepared")]) == 0
    out = capsys.readouterr().out
    assert out.count("\nPASS ") == 7 and out.count("\nSKIP ") == 3 and "\nFAIL " not in out
    for step in ("train: TRL LoRA (CPU)", "export: merged folder", "chat: the merged folder", "export: GGUF refused"):
        assert f"\nPASS  {step}" in out, step
    for step in ("train: Unsloth QLoRA", "GPU tests", "benchmarks.train_throughput"):
        assert f"\nSKIP  {step}" in out and "needs a CUDA GPU" in out.split(f"SKIP  {step}")[1].splitlines()[0]
    assert "at steps [0, 2, 4]" in out  # validation before training and at every checkpoint
    assert "gpu_smoke PASSED: 7 passed, 0 failed, 3 skipped" in out
    assert (tmp_path / "runs" / "smoke-lora" / "merged" / "config.json").is_file()
    assert (tmp_path / "logs" / "train_smoke-lora.log").is_file()


def test_a_failed_step_fails_the_run_and_skips_what_needs_it(tmp_path, capsys):
    prepared = tmp_path / "prepared"
    prepared.mkdir()
    (prepared / "data.csv").write_text("not,a,dataset\n1,2,3\n")
    assert gpu_smoke.main(["--cpu", "--work", str(tmp_path / "work"), "--prepared", str(prepared)]) == 1
    out = capsys.readouterr().out
    assert "\nFAIL  train: TRL LoRA (CPU)" in out and "exit 2" in out
    assert "\nSKIP  export: merged folder: needs train: TRL LoRA (CPU)" in out
    assert "\nSKIP  export: GGUF refused offline: needs train: TRL LoRA (CPU)" in out
    assert "gpu_smoke FAILED: 2 passed, 1 failed, 7 skipped" in out


def test_help_says_how_to_carry_the_wheels(capsys):
    with pytest.raises(SystemExit):
        gpu_smoke.main(["--help"])
    out = capsys.readouterr().out
    assert "get-wheels.sh" in out and '".whl-gpu2", ".gpu-smoke"' in out and "--cpu" in out
