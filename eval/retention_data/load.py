"""Loader for persona_mc.yaml: the JSONL beside this file through `datasets`' json builder (offline)."""

from pathlib import Path

import datasets

DATA_FILE = Path(__file__).with_name("persona_mc.jsonl")


def persona_mc(**kwargs) -> datasets.DatasetDict:
    """lm-eval passes the task's metadata and dataset_kwargs as keyword arguments; none are needed."""
    return datasets.load_dataset("json", data_files={"test": str(DATA_FILE)})
