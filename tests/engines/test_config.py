"""Engine configs: chats load bf16 on a CPU with bf16 instructions; evaluation and training keep fp32."""

from pathlib import Path

import pytest
import torch

import engines.loading as loading
from engines.config import ChatEngineConfig, EngineConfig, GreedySettings, cpu_has_bf16
from engines.loading import pick_dtype


@pytest.mark.parametrize("has", [True, False])
def test_auto_is_bf16_on_cpu_only_for_chats_and_only_where_the_cpu_has_bf16(monkeypatch, has):
    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: has)
    assert pick_dtype("auto", "cpu", cpu_bf16=True) == (torch.bfloat16 if has else torch.float32)
    assert pick_dtype("auto", "cpu") == torch.float32  # evaluation, training
    assert pick_dtype("float32", "cpu", cpu_bf16=True) == torch.float32  # a dtype asked for is kept
    assert pick_dtype("auto", "cuda", cpu_bf16=False) == torch.bfloat16


def test_the_app_and_the_chat_cli_ask_for_it_and_evaluation_does_not():
    from app import AppConfig
    from chatbot.chat import ChatConfig
    from eval.config import EvalConfig

    assert issubclass(AppConfig, ChatEngineConfig) and AppConfig().cpu_bf16
    assert ChatConfig().cpu_bf16 and not EvalConfig().cpu_bf16
    # The model child gets the plain EngineConfig of the app's settings: the choice travels with it.
    app = AppConfig(cpu_bf16=True)
    assert EngineConfig(**app.model_dump(include=set(EngineConfig.model_fields))).cpu_bf16


def test_the_flag_is_read_from_the_cpu():
    info = Path("/proc/cpuinfo")
    flags = info.read_text() if info.exists() else ""
    assert cpu_has_bf16() == ("avx512_bf16" in flags or "amx_bf16" in flags)


def test_a_chat_engine_loads_the_model_in_bf16_where_the_cpu_has_it(monkeypatch, tiny_model_dir):
    from engines.factory import load_engine

    monkeypatch.setattr(loading, "cpu_has_bf16", lambda: True)
    chat = load_engine(ChatEngineConfig(model=str(tiny_model_dir), batching="off", device="cpu"))
    evaluation = load_engine(EngineConfig(model=str(tiny_model_dir), batching="off", device="cpu"))
    assert chat.model.dtype == torch.bfloat16 and evaluation.model.dtype == torch.float32
    assert chat.generate([[{"role": "user", "content": "Hi"}]], GreedySettings(max_new_tokens=4))[0].strip()
