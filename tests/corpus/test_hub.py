"""The default dataset comes from the hub (`hub:google/Synthetic-Persona-Chat`), not the shared fixture."""

import shutil

import pytest

from core.errors import DatasetError
from corpus.examples import DataConfig, fingerprint, load_examples
from corpus.formats import read_conversations
from corpus.hub import DEFAULT_DATASET, cached_file


def test_the_default_dataset_is_the_hubs_not_a_shared_folder():
    assert DataConfig().path == DEFAULT_DATASET and "shared" not in str(DataConfig().path)


def test_offline_and_not_cached_the_message_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_STUDIO_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # no datasets cache to fall back on
    with pytest.raises(DatasetError) as err:
        read_conversations(DEFAULT_DATASET)
    assert "google/Synthetic-Persona-Chat could not be loaded from the Hugging Face hub" in err.value.problem
    assert "--data.path FILE" in err.value.fix and "connect to the internet once" in err.value.fix


def test_a_cached_hub_dataset_reads_like_a_file(tmp_path, monkeypatch, spc_csv):
    monkeypatch.setenv("PERSONA_STUDIO_CACHE", str(tmp_path))
    target = tmp_path / "data" / "google--Synthetic-Persona-Chat" / "train.csv"
    target.parent.mkdir(parents=True)
    shutil.copy(spc_csv, target)
    assert cached_file(DEFAULT_DATASET) == target
    examples, report = load_examples(DataConfig(limit=2), "train")
    assert report.conversations > 900 and len(examples) > 10
    assert fingerprint(DEFAULT_DATASET) == fingerprint(spc_csv)
