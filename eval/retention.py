"""General-skill retention: does a fine-tuned version still know what its base model knew?

    python -m eval.retention --model smollm2-persona-cpu                    # local task, offline
    python -m eval.retention --model smollm2-persona-cpu --tasks hellaswag,mmlu --limit 200

Runs lm-evaluation-harness multiple-choice tasks on the version (its LoRA adapter merged into
the base) and on its base, and reports version - base per metric. `persona_mc` is 32
general-knowledge questions shipped in eval/retention_data/, so it runs without network;
lm-eval's own tasks (hellaswag, mmlu, arc_easy, ...) run when their datasets are in the
Hugging Face cache. Prints a table and writes JSON (default runs/<version>/retention/).

lm-eval (requirements.txt) is imported only when a run starts; without it the error says how to install it.
"""

from __future__ import annotations

import gc
import json
import logging
import sys
import time
from datetime import datetime
from pathlib import Path

from pydantic import Field, field_validator

from core.cli import entry_point
from core.errors import ConfigError, DatasetError
from engines.config import EngineConfig
from engines.loading import load_model_and_tokenizer, resolve_version

log = logging.getLogger("eval.retention")

LOCAL_TASKS = Path(__file__).with_name("retention_data")  # lm-eval task YAMLs of our own
LM_EVAL_PIN = "lm-eval==0.4.13"


class RetentionConfig(EngineConfig):
    tasks: list[str] = Field(["persona_mc"], description="lm-eval tasks or groups: persona_mc (local), hellaswag, ...")
    limit: int | None = Field(None, ge=1, description="Score at most this many questions per task; null = all.")
    batch_size: int = Field(8, ge=1, description="Continuations scored per forward pass.")
    out: str | None = Field(None, description="JSON file to write (default: runs/<version>/retention/<time>.json).")

    @field_validator("tasks", mode="before")
    @classmethod
    def _comma_list(cls, value):
        """`--tasks hellaswag,mmlu` is short for `--tasks [hellaswag,mmlu]`."""
        return [t.strip() for t in value.split(",") if t.strip()] if isinstance(value, str) else value


def _lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise ConfigError(
            "retention needs lm-evaluation-harness, which is not installed",
            f"pip install {LM_EVAL_PIN} (or `pip install -r requirements.txt`)",
        ) from None
    return lm_eval


def task_manager(tasks: list[str]):
    """A TaskManager that knows our local tasks; lm-eval's own ~14,000 task names are indexed
    (~15 s) only when a requested task is not one of ours."""
    _lm_eval()
    from lm_eval.tasks import TaskManager

    local = TaskManager(include_path=str(LOCAL_TASKS), include_defaults=False)
    if all(name in local.all_tasks for name in tasks):
        return local
    manager = TaskManager(include_path=str(LOCAL_TASKS))
    unknown = [name for name in tasks if name not in manager.all_tasks]
    if unknown:
        raise ConfigError(
            f"unknown lm-eval task(s): {', '.join(unknown)}",
            f"local tasks: {', '.join(local.all_tasks)}; or an lm-eval task such as hellaswag, mmlu, arc_easy",
        )
    return manager


def check_datasets(tasks: list[str], manager) -> None:
    """Build the tasks once before any model loads, so a dataset missing offline fails in seconds."""
    try:
        manager.load(tasks)
    except (ConnectionError, OSError) as err:
        raise DatasetError(
            f"could not load the dataset of {', '.join(tasks)}: {str(err).splitlines()[0]}",
            "run once with network to fill the Hugging Face cache, or use the local task: --tasks persona_mc",
        ) from None


def run_tasks(model: str, adapter: str | None, cfg: RetentionConfig, manager) -> dict:
    """lm-eval results for `model` (+ `adapter`): {"results": {task: {"acc,none": ...}}, "n-samples": ...}."""
    import torch
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM

    # An HFLM around our loaded model, so a version is its base with the adapter merged in,
    # exactly as chat and eval load it.
    hf_model, tokenizer = load_model_and_tokenizer(model, adapter, dtype=cfg.dtype, device=cfg.device)
    lm = HFLM(pretrained=hf_model, tokenizer=tokenizer, batch_size=cfg.batch_size)
    results = simple_evaluate(
        model=lm,
        tasks=cfg.tasks,
        task_manager=manager,
        limit=cfg.limit,
        log_samples=False,
        bootstrap_iters=1000,  # only for metrics without a closed-form stderr; acc has one
    )
    del lm, hf_model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return {"results": results["results"], "n-samples": results.get("n-samples", {})}


def scores(run: dict) -> dict[tuple[str, str], dict]:
    """{(task, metric): {value, stderr, n}} from lm-eval's "acc,none" / "acc_stderr,none" keys."""
    out = {}
    for task, metrics in run["results"].items():
        n = run["n-samples"].get(task, {}).get("effective", metrics.get("sample_len"))
        for key, value in metrics.items():
            name, _, filter_name = key.partition(",")
            if not filter_name or name.endswith("_stderr") or not isinstance(value, int | float):
                continue
            stderr = metrics.get(f"{name}_stderr,{filter_name}")
            metric = name if filter_name == "none" else key
            out[task, metric] = {
                "value": float(value),
                "stderr": float(stderr) if isinstance(stderr, int | float) else None,
                "n": n,
            }
    return out


def compare(version: dict, base: dict) -> list[dict]:
    """One row per (task, metric) both runs have: version, base, delta = version - base."""
    v_scores, b_scores = scores(version), scores(base)
    rows = []
    for task, metric in sorted(v_scores.keys() & b_scores.keys()):
        v, b = v_scores[task, metric], b_scores[task, metric]
        rows.append(
            {
                "task": task,
                "metric": metric,
                "version": v["value"],
                "base": b["value"],
                "delta": v["value"] - b["value"],
                "version_stderr": v["stderr"],
                "base_stderr": b["stderr"],
                "n": v["n"],
            }
        )
    return rows


def retention(version_spec: str, tasks: list[str] | None = None, limit: int | None = None, **engine) -> dict:
    """Score `version_spec` and its base on lm-eval `tasks` (default: the local persona_mc).

    `engine` takes RetentionConfig fields: adapter, runs_dir, dtype, device, batch_size. A spec
    without an adapter (`base`, a folder, a hub id) is scored once and is its own base (delta 0).
    Returns {model_version, base_model, adapter, tasks, limit, rows, all_rows, runtime_s, lm_eval_version,
    config}; a row is {task, metric, version, base, delta, version_stderr, base_stderr, n}.
    """
    cfg = RetentionConfig(model=version_spec, tasks=tasks or ["persona_mc"], limit=limit, **engine)
    lm_eval = _lm_eval()
    start = time.perf_counter()
    base_model, adapter = resolve_version(cfg.model, cfg.adapter, cfg.runs_dir)
    manager = task_manager(cfg.tasks)
    check_datasets(cfg.tasks, manager)
    base = run_tasks(base_model, None, cfg, manager)
    version = run_tasks(base_model, adapter, cfg, manager) if adapter else base
    rows = compare(version, base)
    return {
        "model_version": version_spec,
        "base_model": base_model,
        "adapter": adapter,
        "tasks": cfg.tasks,
        "limit": cfg.limit,
        # The tasks asked for (a group such as mmlu as its aggregate); all_rows adds every subtask.
        "rows": [row for row in rows if row["task"] in cfg.tasks] or rows,
        "all_rows": rows,
        "runtime_s": round(time.perf_counter() - start, 1),
        "lm_eval_version": lm_eval.__version__,
        "config": cfg.model_dump(),
    }


def format_table(result: dict) -> str:
    """Markdown: task, metric, version, base, delta (stderr beside each score)."""

    def score(value, stderr):
        return f"{value:.3f}" + (f" ± {stderr:.3f}" if stderr is not None else "")

    lines = ["| task | metric | n | version | base | delta |", "|---|---|---|---|---|---|"]
    for row in result["rows"]:
        lines.append(
            f"| {row['task']} | {row['metric']} | {row['n'] or '-'} | {score(row['version'], row['version_stderr'])} "
            f"| {score(row['base'], row['base_stderr'])} | {row['delta']:+.3f} |"
        )
    return "\n".join(lines)


@entry_point(RetentionConfig, __doc__)
def main(cfg: RetentionConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    from eval.run import version_name

    name = version_name(cfg)
    engine = cfg.model_dump(exclude={"model", "tasks", "limit", "out"})
    result = retention(cfg.model, cfg.tasks, cfg.limit, **engine)
    out = Path(cfg.out) if cfg.out else Path(cfg.runs_dir) / name / "retention" / f"{datetime.now():%Y%m%d-%H%M%S}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(format_table(result))
    print(f"{result['runtime_s']} s; written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
