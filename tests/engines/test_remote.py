"""OpenAIEngine: settings mapping and error paths (fast), then chats through a real
`transformers serve` of the default model (slow: a server start is ~5 s)."""

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from chatbot.session import ChatSession
from core.errors import ConfigError, GenerationError, ModelLoadError
from core.persona import load_persona, render_system_prompt
from engines.config import EngineConfig, GenerationSettings
from engines.factory import load_engine
from engines.remote import OpenAIEngine, api_base, request_params
from tests.conftest import REPO

GREEDY = GenerationSettings(temperature=0, max_new_tokens=8)


# -- fast: no server ---------------------------------------------------------------------------


def test_sampling_settings_map_to_openai_params_and_extra_body():
    settings = GenerationSettings(temperature=0.8, top_p=0.95, top_k=40, max_new_tokens=100, repetition_penalty=1.2)
    assert request_params(settings) == {
        "temperature": 0.8,
        "top_p": 0.95,
        "max_tokens": 100,
        "extra_body": {"top_k": 40, "repetition_penalty": 1.2},
    }


def test_greedy_without_penalty_sends_only_openai_params_and_the_seed():
    settings = GenerationSettings(temperature=0, top_k=40, repetition_penalty=1.0, max_new_tokens=64, seed=7)
    assert request_params(settings) == {"temperature": 0, "top_p": 0.9, "max_tokens": 64, "seed": 7}


def test_reply_is_capped_to_the_room_the_prompt_leaves():
    assert request_params(GenerationSettings(max_new_tokens=100), max_tokens=30)["max_tokens"] == 30
    assert request_params(GenerationSettings(max_new_tokens=10), max_tokens=30)["max_tokens"] == 10


def test_server_root_and_v1_urls_both_work():
    assert api_base("http://localhost:8011") == api_base("http://localhost:8011/v1/") == "http://localhost:8011/v1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_server_down_at_start_names_the_url_and_the_fix():
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(ModelLoadError) as err:
        load_engine(EngineConfig(engine_url=url, engine_max_retries=0))
    assert f"cannot reach the model server at {url}/v1" in str(err.value)
    assert "transformers serve" in err.value.fix and "--engine_url" in err.value.fix


class ModelList(BaseHTTPRequestHandler):
    """A server's `GET /v1/models` (as vLLM answers it), and nothing else."""

    def do_GET(self):
        body = json.dumps({"object": "list", "data": [{"id": "llama-3-8b", "object": "model"}]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_a_model_the_server_does_not_list_is_refused_with_what_it_offers(tiny_model_dir):
    stub = ThreadingHTTPServer(("127.0.0.1", 0), ModelList)
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{stub.server_port}"
    try:
        with pytest.raises(ModelLoadError) as err:
            load_engine(EngineConfig(engine_url=url, model=str(tiny_model_dir)))
    finally:
        stub.shutdown()
    assert f"does not serve model '{tiny_model_dir}'; it offers: llama-3-8b" in str(err.value)


def test_an_adapter_cannot_go_to_a_server():
    with pytest.raises(ConfigError, match="--adapter cannot be sent"):
        load_engine(EngineConfig(engine_url="http://127.0.0.1:1", adapter="runs/x/adapter"))


def test_engine_url_and_key_come_from_the_environment(monkeypatch):
    monkeypatch.setenv("PERSONA_STUDIO_ENGINE_URL", "http://gpu-box:8000")
    cfg = EngineConfig(engine_api_key="secret")
    assert cfg.engine_url == "http://gpu-box:8000"
    assert "engine_api_key" not in cfg.model_dump()  # never written beside results


def test_eval_leaves_log_prob_metrics_out_for_a_server_and_says_why():
    from eval.config import EvalConfig
    from eval.evaluate import automatic_metrics, ranking_scores

    server = SimpleNamespace(name="base via http://gpu-box:8000")  # any engine but a local transformers one
    turn = SimpleNamespace(target="I build clocks.", messages=[{"role": "user", "content": "Hi"}], conversation_id="c")
    summary, per_item, info = automatic_metrics(EvalConfig(bertscore=False), server, [turn], ["I make clocks."])
    assert "perplexity" not in summary and "perplexity" not in per_item and "bleu" in summary
    assert info["perplexity"].startswith("not computed: base via http://gpu-box:8000 is a model server")
    assert ranking_scores(EvalConfig(), server, [turn], {})[2]["hits_at_1"].startswith("not computed")


# -- slow: a real server -----------------------------------------------------------------------


@contextmanager
def serving(model_dir: Path, log: Path):
    """`transformers serve model_dir` on a free port, offline; yields its URL once it answers."""
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    with open(log, "w") as out:
        proc = subprocess.Popen([cli, "serve", str(model_dir), "--port", str(port)], stdout=out, stderr=out, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"transformers serve did not start:\n{log.read_text()[-2000:]}")
                time.sleep(0.3)
        yield proc, url
    finally:
        proc.kill()
        proc.wait()


@pytest.fixture(scope="module")
def server(default_model_dir, tmp_path_factory):
    with serving(default_model_dir, tmp_path_factory.mktemp("serve") / "serve.log") as (_, url):
        yield url


@pytest.fixture(scope="module")
def remote(server) -> OpenAIEngine:
    return load_engine(EngineConfig(engine_url=server))


def recording(monkeypatch, engine: OpenAIEngine) -> list[dict]:
    """Every request the engine sends, as keyword arguments."""
    sent, create = [], engine.client.chat.completions.create

    def spy(**kwargs):
        sent.append(kwargs)
        return create(**kwargs)

    monkeypatch.setattr(engine.client.chat.completions, "create", spy)
    return sent


@pytest.mark.slow
def test_streamed_chat_and_persona_switch_through_the_server(remote, ada, monkeypatch):
    assert not remote.send_extra  # transformers serve refuses top_k / repetition_penalty: found out at load
    sent = recording(monkeypatch, remote)
    session = ChatSession(remote, ada, GREEDY)
    pieces = list(session.send("Hi Ada, what are you building?"))
    assert len(pieces) > 1 and session.history[-1] == {"role": "assistant", "content": "".join(pieces).strip()}
    assert sent[-1]["stream"] and sent[-1]["messages"][0]["content"] == render_system_prompt(ada)

    nova = load_persona(REPO / "personas" / "nova.yaml")
    session.switch_persona(nova)
    assert session.reply("Who are you?")
    system = [m for m in sent[-1]["messages"] if m["role"] == "system"]
    assert system == [{"role": "system", "content": render_system_prompt(nova)}]
    assert sent[-1]["messages"][1:] == [{"role": "user", "content": "Who are you?"}]  # Nova starts afresh


@pytest.mark.slow
def test_batched_generate_answers_in_order_and_matches_single_requests(remote, ada):
    system = {"role": "system", "content": render_system_prompt(ada)}
    batch = [[system, {"role": "user", "content": q}] for q in ("Hi!", "What is your job?", "Tell me a joke.")]
    replies = remote.generate(batch, GREEDY, batch_size=3)
    assert all(replies) and len(set(replies)) == 3
    assert replies[1] == remote.generate(batch[1:2], GREEDY)[0]  # in order, and as when asked alone


@pytest.mark.slow
def test_history_is_trimmed_with_the_local_tokenizer(remote, tiny_engine):
    messages = [{"role": "user", "content": "word " * 50}, {"role": "assistant", "content": "ok"}] * 10
    messages.append({"role": "user", "content": "last"})
    assert remote.count_tokens(messages) == tiny_engine.count_tokens(messages)  # same tokenizer and template
    window, remote.context_window = remote.context_window, 300
    try:
        fitted = remote.fit_messages(messages, GREEDY)
    finally:
        remote.context_window = window
    assert len(fitted) < len(messages) and fitted[-1]["content"] == "last"


@pytest.mark.slow
def test_unknown_model_is_a_clear_error(server, tiny_model_dir):
    with pytest.raises(ModelLoadError) as err:  # a model here, but not the one the server serves
        load_engine(EngineConfig(engine_url=server, model=str(tiny_model_dir)))
    assert f"does not know model '{tiny_model_dir}'" in str(err.value)
    assert "/v1/models does not answer" in str(err.value)  # transformers serve: 500 without a hub cache


@pytest.mark.slow
def test_server_killed_mid_stream_is_a_generation_error_and_the_history_stays(default_model_dir, tmp_path, ada):
    with serving(default_model_dir, tmp_path / "serve.log") as (proc, url):
        engine = load_engine(EngineConfig(engine_url=url, engine_max_retries=0))
        session = ChatSession(engine, ada, GenerationSettings(max_new_tokens=400))
        before = list(session.history)
        stream = session.send("Tell me a long story about your work.")
        next(stream)
        proc.kill()
        with pytest.raises(GenerationError, match=f"lost the model server at {url}/v1"):
            list(stream)
    assert session.history == before


@pytest.mark.slow
def test_eval_run_through_the_server_leaves_perplexity_out(server, tmp_path, spc_csv):
    from eval.run import main as run_main

    out = tmp_path / "eval-out"
    flags = ["--engine_url", server, "--model", "base", "--data", str(spc_csv), "--limit", "2", "--batch_size", "2",
             "--generation.max_new_tokens", "8", "--bertscore", "false", "--consistency", "false",
             "--register_labels", "false", "--runs_dir", str(tmp_path / "runs"), "--out", str(out)]  # fmt: skip
    assert run_main(flags) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["items"] == 2 and summary["model"] == f"base via {server}" and "bleu" in summary
    assert "perplexity" not in summary and summary["info"]["perplexity"].startswith("not computed")
    assert "hits_at_1" not in summary and summary["info"]["hits_at_1"].startswith("not computed")
