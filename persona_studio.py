"""`persona-studio <job> [flags]`: one command for every job, as `llamafactory-cli train` or `axolotl train`.

    persona-studio app --port 8000
    persona-studio train --config training/recipes/smollm2-135m-lora-cpu.yaml
    persona-studio train --help

Each job is also `python -m <module>` (the table below) and takes the same flags; `--help` after a
job lists them. The job's module is imported only when it is asked for (torch, Gradio: seconds).
"""

from __future__ import annotations

import importlib
import sys

JOBS = {
    "app": ("app", "the web app: Chat · Compare · Label · Organise · Results"),
    "chat": ("chatbot.chat", "chat in the terminal under a persona"),
    "train": ("training.train", "fine-tune a version (SFT, KTO, DPO) from a recipe"),
    "export": ("training.export", "a version as a merged folder or GGUF"),
    "eval": ("eval.run", "BLEU, ROUGE, BERTScore, perplexity and probes of a version"),
    "regress": ("eval.regress", "scripted regression chats against a version"),
    "report": ("eval.report", "the scorecard of a version against its parent"),
    "label-export": ("eval.export_labels", "raters' labels and votes as a training dataset"),
    "leaderboard": ("eval.leaderboard", "Bradley-Terry leaderboard of the blind A/B votes, with intervals"),
    "label-next": ("eval.label_next", "reorder the label queue: disagreements and open versions first"),
    "serve": ("engines.serve", "serve versions on vLLM, llama.cpp or `transformers serve`"),
    "scope": ("chatbot.scope", "train and check a persona's scope guard"),
    "setup": ("core.default_model", "prepare the packaged default model (once, offline)"),
}


def usage() -> str:
    rows = "\n".join(f"  {job:<13} {text}   (python -m {module})" for job, (module, text) in JOBS.items())
    return f"usage: persona-studio <job> [flags]   (persona-studio <job> --help)\n\njobs:\n{rows}\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0
    if argv[0] not in JOBS:
        print(f"error: no job `{argv[0]}`\n\n{usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(JOBS[argv[0]][0])
    sys.argv = [f"persona-studio {argv[0]}", *argv[1:]]  # argparse's usage line names the command typed
    return module.main(argv[1:]) or 0


if __name__ == "__main__":
    sys.exit(main())
