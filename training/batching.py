"""How a training batch is laid out, and which attention runs on it.

Packed (`sft.packing`, `packing_strategy: bfd`) and padding-free (`sft.padding_free`) batches
are one flat row of several sequences whose position ids restart at 0 at each sequence start
(TRL's `DataCollatorForLanguageModeling(padding_free=True)`). They pay off only with a
variable-length attention kernel that keeps the sequences apart by those boundaries:
FlashAttention (`attn_implementation="flash_attention_2"`, TRL backend) or xformers (Unsloth's
padding-free path). Without one, transformers and Unsloth fall back to SDPA with one dense
T x T mask over the whole flat row, which at ~20k tokens a step costs more than the linear
layers (issue 26, H200). So where no kernel is installed the batches are padded and grouped
by length instead, and the log says which attention ran.
"""

from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass, field

log = logging.getLogger("training")


@dataclass(frozen=True)
class Batching:
    attention: str  # what runs: flash_attention_2, xformers, or sdpa (padded)
    attn_implementation: str | None  # for from_pretrained (TRL backend); None = the model's default
    sft_overrides: dict = field(default_factory=dict)  # SFTConfig fields the plan changes
    note: str = ""


def varlen_kernel(backend: str, cuda: bool) -> str | None:
    """The variable-length attention installed for `backend`, or None (always None on CPU)."""
    if not cuda:
        return None
    if backend == "unsloth" and importlib.util.find_spec("xformers") is not None:
        return "xformers"
    if importlib.util.find_spec("flash_attn") is not None:
        return "flash_attention_2"
    return None


def plan_batching(sft: dict, backend: str, cuda: bool) -> Batching:
    """The batch layout and attention for the `sft` section (`cfg.sft.model_dump()`)."""
    asked = bool(sft.get("packing")) or bool(sft.get("padding_free"))
    # Unsloth turns padding-free batches on by itself when padding_free is left None.
    unsloth_default = backend == "unsloth" and sft.get("padding_free") is None
    kernel = varlen_kernel(backend, cuda)
    if kernel and (asked or unsloth_default):
        implementation = "flash_attention_2" if kernel == "flash_attention_2" and backend == "trl" else None
        return Batching(
            kernel, implementation, note="packed/padding-free batches, sequences kept apart by position ids"
        )
    if not (asked or unsloth_default):
        return Batching("sdpa", None, note=f"padded batches ({sft.get('train_sampling_strategy', 'random')} order)")
    overrides = {"packing": False, "padding_free": False, "train_sampling_strategy": "group_by_length"}
    why = "no variable-length attention kernel (flash-attn, or xformers with Unsloth) on this machine"
    return Batching(
        "sdpa",
        None,
        overrides,
        f"padded batches grouped by length instead of packed/padding-free ones: {why}; a flat batch would "
        "attend through one dense T x T mask",
    )


def log_batching(plan: Batching, explicit: bool) -> None:
    level = logging.WARNING if plan.sft_overrides and explicit else logging.INFO
    log.log(level, "attention: %s, %s", plan.attention, plan.note)
