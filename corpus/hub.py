"""Datasets from the Hugging Face hub, read like local files: `data.path: hub:OWNER/NAME`.

The product's default dataset is `hub:google/Synthetic-Persona-Chat`: its train split is fetched
once with `datasets.load_dataset` and written as a CSV under the cache dir
(`$PERSONA_STUDIO_CACHE/data/`), which `corpus.formats` then reads as it reads any file (the
product makes its own train/validation/test split by conversation). Offline and not cached,
reading it fails with a message that says how to get it or what to pass instead.
"""

from __future__ import annotations

from pathlib import Path

from core.errors import DatasetError

PREFIX = "hub:"
DEFAULT_DATASET = Path(f"{PREFIX}google/Synthetic-Persona-Chat")


def is_hub(path: str | Path) -> bool:
    return str(path).startswith(PREFIX)


def cached_file(path: str | Path) -> Path:
    """The local CSV of hub dataset `path` (`hub:OWNER/NAME`, its train split), fetched if missing."""
    from core.default_model import cache_dir

    repo = str(path)[len(PREFIX) :].strip("/")
    target = cache_dir() / "data" / repo.replace("/", "--") / "train.csv"
    if target.is_file():
        return target
    try:
        from datasets import load_dataset

        rows = load_dataset(repo, split="train")
    except Exception as err:  # offline, unknown repo, no access: datasets raises many kinds
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise DatasetError(
            f"the dataset {repo} could not be loaded from the Hugging Face hub ({first})",
            "connect to the internet once (it is cached in "
            f"{target.parent}), or pass a local file: --data.path FILE (a Synthetic-Persona-Chat CSV, "
            "a question/answer CSV or a chat-messages JSONL)",
        ) from None
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial")
    rows.to_csv(str(partial), index=False)
    partial.replace(target)  # a half-written file is never taken for the dataset
    return target
