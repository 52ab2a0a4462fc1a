"""`EvalConfig`: what `python -m eval.run` evaluates, on which data, with which decoding."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from corpus.examples import DataConfig
from engines.config import EngineConfig, GreedySettings


class EvalConfig(EngineConfig):
    data: DataConfig = Field(default_factory=DataConfig, description="Dataset (`--data PATH` or `--data.path`).")
    split: Literal["train", "validation", "test"] = Field("test", description="Which split to score.")
    limit: int | None = Field(200, ge=1, description="Score this many turns (a seeded sample); null = all.")
    seed: int = Field(0, description="Seed for the turn sample and the 'other persona' pairing.")
    batch_size: int = Field(8, ge=1, description="Prompts per generation / perplexity batch.")
    generation: GreedySettings = Field(default_factory=GreedySettings)
    bertscore: bool = Field(True, description="Compute BERTScore (all-MiniLM-L6-v2).")
    perplexity: bool = Field(True, description="Perplexity of the reference reply under the version.")
    consistency: bool = Field(True, description="Persona grounding and the persona-swap probe.")
    swap_probe_items: int = Field(20, ge=0, description="Turns re-asked under another persona for the swap probe.")
    hits_items: int = Field(50, ge=0, description="Turns ranked for Hits@1/20 (20 likelihood scorings each; 0 = off).")
    allow_overlap: bool = Field(False, description="Score turns the version was trained on (warns loudly).")
    register_labels: bool = Field(True, description="Put every generated reply in the label queue.")
    database_url: str | None = Field(None, description="Label store (default: DATABASE_URL or SQLite in data/).")
    out: str | None = Field(None, description="Output folder (default: runs/<version>/eval/<timestamp>/).")

    cli_shortcuts: ClassVar[dict[str, str]] = {"data": "data.path"}
