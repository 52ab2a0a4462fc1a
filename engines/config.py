"""What the engines are configured with: which model answers (`EngineConfig`) and how it
decodes (`GenerationSettings`, `GreedySettings`).

Plain pydantic models, apart from the engines that load torch and transformers: a job's
`--help` and its flags are read from these before anything heavy is imported (`python app.py
--help` answers in about a second, not after the 10-20 s of importing torch and Gradio).
"""

from __future__ import annotations

import os
from functools import cache
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from core.default_model import DEFAULT_MODEL

# Default budget (tokens in all entries): ~375 MB of fp32 KV for SmolLM2-135M, ~1 GB bf16 for Llama-3-8B.
PREFIX_CACHE_TOKENS = 8192


class EngineConfig(BaseModel):
    """Which model answers. Shared by the chat CLI, the app and eval."""

    model_config = ConfigDict(extra="forbid")
    model: str = Field(
        DEFAULT_MODEL,
        description="`default` (embedded SmolLM2-135M), a trained version name, a folder, a .gguf, or a hub id.",
    )
    adapter: str | None = Field(None, description="LoRA adapter folder to put on top of the model.")
    dtype: str = Field("auto", description="auto (fp32 on CPU, bf16 on CUDA), float32, bfloat16, float16.")
    # Off for evaluation: its metrics stay comparable with every version evaluated before in fp32.
    cpu_bf16: bool = Field(
        False,
        description="With dtype auto on CPU: bf16 where the CPU has bf16 instructions (AVX512-BF16, AMX), else "
        "fp32. On for chats (the app, chatbot.chat): a faster first token.",
    )
    device: str = Field("auto", description="auto, cpu, cuda, cuda:1, ...")
    max_context_tokens: int | None = Field(
        None, ge=16, description="Cap the context window (default: the model's config, else its tokenizer's)."
    )
    runs_dir: str = Field("runs", description="Folder of trained model versions; --model may name one.")
    prefix_cache_tokens: int = Field(
        PREFIX_CACHE_TOKENS, ge=0, description="KV cache of recent chat turns kept for reuse, in tokens (0 = off)."
    )
    # Chats decode together (`engines.batched`), each from its prefix cache: measured faster than
    # one `generate` per chat at 1, 4, 16 and 32 users (benchmarks/README.md, "Many users at once").
    batching: Literal["off", "auto"] = Field(
        "auto",
        description="auto: concurrent chats share decoding steps (one forward for all), each prefilling only what "
        "its prefix cache lacks (full-attention models; others and ZeroGPU run as off); off: each chat runs its "
        "own generate. In-process models only.",
    )
    # A model server instead of a model in this process (`engines.remote`); the settings above
    # that place weights (dtype, device, prefix cache) are then the server's business.
    engine_url: str | None = Field(
        default_factory=lambda: os.environ.get("PERSONA_STUDIO_ENGINE_URL") or None,
        description="OpenAI-compatible server to generate with (`transformers serve`, vLLM, llama.cpp), e.g. "
        "http://localhost:8011; env PERSONA_STUDIO_ENGINE_URL.",
    )
    # Read from the environment by the engine, not here: `--help` and saved configs would show it.
    engine_api_key: str | None = Field(
        None, exclude=True, description="API key for --engine_url; env PERSONA_STUDIO_ENGINE_API_KEY."
    )
    engine_timeout: float = Field(120.0, gt=0, description="Seconds to wait for the model server per request.")
    engine_max_retries: int = Field(2, ge=0, description="Retries of a failed request to the model server.")

    @field_validator("batching", mode="before")
    @classmethod
    def _off_is_not_false(cls, value):
        # Flags and YAML files are read as YAML 1.1, where a bare `off` is the boolean false.
        return "off" if value is False else value


@cache
def cpu_has_bf16() -> bool:
    """Whether this CPU multiplies bf16 in hardware (AVX512-BF16 or AMX); Linux only: elsewhere no."""
    try:
        with open("/proc/cpuinfo") as info:
            flags = next((line for line in info if line.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


class ChatEngineConfig(EngineConfig):
    """The engine of chats a person waits on (the app, `chatbot.chat`): bf16 on a CPU with bf16
    instructions (`cpu_bf16`)."""

    # Measured on 2 AMD EPYC (Zen 4) cores, SmolLM2-135M, batched engine: the first visible token of
    # a warm chat in the browser 0.26 -> 0.18 s, 16 chats at once 115 -> 181 pieces/s
    # (benchmarks/README.md, "bf16 chats on CPU").
    cpu_bf16: bool = Field(True, description=EngineConfig.model_fields["cpu_bf16"].description)


class GenerationSettings(BaseModel):
    """Decoding settings; names match `transformers.GenerationConfig`."""

    model_config = ConfigDict(extra="forbid")
    temperature: float = Field(0.7, ge=0.0, le=5.0, description="0 means greedy decoding.")
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    top_k: int = Field(50, ge=0, description="Sample from the k most likely tokens; 0 = off.")
    max_new_tokens: int = Field(128, ge=1, le=8192, description="Most tokens in one reply.")
    repetition_penalty: float = Field(1.1, gt=0.0, description="1.0 = no penalty.")
    seed: int | None = Field(None, description="Fix the sampling seed for reproducible replies.")
    guidance_scale: float = Field(
        3.0,
        ge=1.0,
        le=10.0,
        description="After a persona switch: classifier-free guidance against the same prompt under the old "
        "persona (transformers' guidance_scale; 1 = off). Costs a second forward per token on those replies.",
    )

    def generate_kwargs(self) -> dict:
        # guidance_scale is not here: it needs a negative prompt, which only a switch gives (engines.engine).
        kwargs = {"max_new_tokens": self.max_new_tokens, "repetition_penalty": self.repetition_penalty}
        if self.temperature == 0:
            return {**kwargs, "do_sample": False}
        return {**kwargs, "do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": self.top_k}


class GreedySettings(GenerationSettings):
    """Greedy and short: reproducible replies, comparable across versions (`eval.run`,
    `eval.regress`; recorded with their results). A subclass with its own field defaults, not
    a default instance, so `--generation.max_new_tokens 32` keeps temperature 0."""

    temperature: float = Field(0.0, ge=0.0, le=5.0, description="0 means greedy decoding.")
    max_new_tokens: int = Field(64, ge=1, le=8192, description="Most tokens in one reply.")
