"""Persona Studio web app: Chat · Compare · Label · Results · Organise.

    python app.py                                   # http://127.0.0.1:7860, embedded default model
    python app.py --model smollm2-persona-cpu --port 8000
    DATABASE_URL=postgresql://user:pw@host/db PERSONA_STUDIO_AUTH="ana:pw1,ben:pw2" python app.py

Every setting is a flag (`--help`), a key of a `--config` YAML file, and an environment
variable PERSONA_STUDIO_<FIELD> (DATABASE_URL, GRADIO_SERVER_NAME/PORT, PERSONA_STUDIO_RUNS
for four of them), so a Hugging Face Space is configured from its settings page.
On a Space (SPACE_ID set) the app listens on 0.0.0.0:7860, loads the base model from the hub,
lets raters sign in with Hugging Face, and keeps labels under /data, in DATABASE_URL, or warns
on every tab that they are lost at the next restart. Handlers live in `ui/` and stay thin;
scripts call the typed API endpoints by name (`/chat`, `/compare`, `/next_item`, `/label`, ... :
see README).
"""

from __future__ import annotations

import logging
import os
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.cli import entry_point
from core.default_model import base_model, on_space
from core.errors import ConfigError
from corpus.hub import DEFAULT_DATASET
from engines.config import ChatEngineConfig, GenerationSettings

# Only what reading the flags needs is imported above: torch, transformers and Gradio take 10-20 s
# to import on 2 cores, and `--help` or a mistyped flag should answer at once (tests/test_app.py
# checks). Each function below imports what it runs on.
if TYPE_CHECKING:
    import gradio as gr

    from store import Store, StoreAPI
    from ui.context import AppContext

UNBATCHED_LIMIT = 4  # one generate per chat: more at once only share 2 cores worse
BATCHED_LIMIT = 32  # chats decoded together: each one let in joins the batch


def oauth_available() -> bool:
    """Hugging Face sign-in works here (`--oauth`'s default): a Space whose README front matter has
    `hf_oauth: true` (the Space then sets OAUTH_CLIENT_ID). Elsewhere Gradio's LoginButton would
    pretend to sign in with the machine's own HF token, so it is not offered."""
    return bool(os.environ.get("SPACE_ID") and os.environ.get("OAUTH_CLIENT_ID"))


class AppConfig(BaseSettings, ChatEngineConfig):
    """Flags and YAML (`--config`) override the environment: every field reads
    PERSONA_STUDIO_<FIELD> (sections: PERSONA_STUDIO_GENERATION__MAX_NEW_TOKENS), and the few
    with a validation_alias read the name a Space or a database host sets instead."""

    model_config = SettingsConfigDict(
        env_prefix="PERSONA_STUDIO_", env_nested_delimiter="__", env_ignore_empty=True, validate_by_name=True
    )
    model: str = Field(
        default_factory=base_model, description="Base model (`base`); env PERSONA_STUDIO_MODEL (a Space: the hub id)."
    )
    runs_dir: str = Field("runs", validation_alias="PERSONA_STUDIO_RUNS", description="Trained versions folder.")
    # A Space must listen on every interface (port 7860); locally we stay on loopback.
    host: str = Field(
        default_factory=lambda: "0.0.0.0" if on_space() else "127.0.0.1",
        validation_alias="GRADIO_SERVER_NAME",
        description="Interface to listen on (0.0.0.0 on a Space); env GRADIO_SERVER_NAME.",
    )
    port: int = Field(7860, validation_alias="GRADIO_SERVER_PORT", description="Port; env GRADIO_SERVER_PORT.")
    personas_dir: str = Field("personas", description="Folder of persona YAML files.")
    dataset: str = Field(
        str(DEFAULT_DATASET),
        description="What Organise queues and evaluates from: a Synthetic-Persona-Chat CSV or hub:OWNER/NAME (fetched "
        "once with `datasets`; offline, pass a file).",
    )
    database_url: str | None = Field(
        None,
        validation_alias="DATABASE_URL",
        description="Label store (default: SQLite in data/; or postgresql://...); env DATABASE_URL.",
    )
    auth: str | None = Field(None, description="`user:pass,user2:pass2` turns on rater login; env PERSONA_STUDIO_AUTH.")
    oauth: bool = Field(
        default_factory=oauth_available,
        description="Raters sign in with Hugging Face (default: on a Space with `hf_oauth: true`).",
    )
    # Spaces lose their disk at every restart; a Storage Bucket mounted as a volume does not.
    volume: str = Field("/data", description="On a Space: the mounted volume the SQLite store goes to when writable.")
    backup_repo: str | None = Field(
        None, description="Private dataset repo (user/name) the store's tables are pushed to as JSONL (needs HF_TOKEN)."
    )
    backup_minutes: float = Field(5, gt=0, description="Minutes between pushes to --backup_repo.")
    label_overlap: int = Field(1, ge=1, description="Raters per label item (2+ lets agreement be measured).")
    label_gold_share: float = Field(
        0.0, ge=0, le=1, description="Share of each rater's items that are gold (a known verdict), unmarked to them."
    )
    label_repeat_share: float = Field(
        0.0, ge=0, le=1, description="Share of each rater's items shown to them again later (self-agreement)."
    )
    min_gold_accuracy: float | None = Field(
        None, ge=0, le=1,
        description="Leave raters below this accuracy on gold items (5+ of them) out of Results' human accuracy.",
    )  # fmt: skip
    # One generate per chat does best at 4 at once on 2 cores; batched chats decode together, so every
    # chat should reach the batch (benchmarks/README.md, "Many users at once").
    concurrency_limit: int | None = Field(
        None, ge=1,
        description="Generations at once; default 32 where chats are decoded together (batched engine, a model "
        "server), else 4.",
    )  # fmt: skip
    max_queue: int = Field(64, ge=1, description="Requests waiting before new ones are turned away.")
    # An event waits in Gradio's queue (counted against max_queue) only while its group is at its
    # limit or all of these are busy. Label events have no limit of their own (ui/label.py), so
    # this keeps a slow moment under a room of raters from filling the queue: with Gradio's 40,
    # 100 raters + 16 chatters on 2 cores got HTTP 503s (benchmarks/label_load).
    max_threads: int = Field(256, ge=8, description="Events running at once, all groups (Gradio's max_threads).")
    # The model's Python code holds the interpreter lock between torch ops: in a child process it no
    # longer delays the raters' clicks or the other chats (engines/child.py).
    model_process: Literal["auto", "child", "app"] = Field(
        "auto",
        description="Where a local model runs: child = its own process at a lower priority (generation does not "
        "hold the app's interpreter lock), app = the app's process; auto = child on CPU, app on a GPU or ZeroGPU.",
    )
    model_threads: int | None = Field(
        None, ge=1,
        description="torch threads of the model's child process (--model_process child); default: all cores but "
        "one, which the app's requests keep.",
    )  # fmt: skip
    # A label's write transaction waits less for the interpreter lock in a process of its own
    # (store/process.py; benchmarks/README.md, "A room of raters").
    store_process: Literal["auto", "child", "app"] = Field(
        "auto",
        description="Where the label store's queries run: child = its own process (raters' writes do not wait "
        "on the app's interpreter lock), app = the app's process; auto = child (app on Windows).",
    )
    generation: GenerationSettings = Field(default_factory=GenerationSettings)


def parse_auth(spec: str | None) -> list[tuple[str, str]] | None:
    if not spec:
        return None
    pairs = [item.split(":", 1) for item in spec.split(",") if item.strip()]
    if any(len(p) != 2 or not p[0].strip() or not p[1] for p in pairs):
        raise ConfigError("PERSONA_STUDIO_AUTH must look like `ana:secret1,ben:secret2`", "fix the user:password list")
    return [(user.strip(), password) for user, password in pairs]


def open_store(cfg: AppConfig) -> tuple[Store, str | None]:
    """The label store, and the warning to show when its labels will not survive a restart.

    Locally: DATABASE_URL, else data/persona_studio.db, as always. On a Space, whose disk is
    wiped at every restart: DATABASE_URL, else SQLite on the volume (`--volume`, /data) when one
    is mounted there writable, else data/ with the warning."""
    from store import Store

    if cfg.database_url or not on_space():
        return Store(cfg.database_url, migrate=True), None  # the app brings an older database up to date
    volume = Path(cfg.volume)
    if volume.is_dir() and os.access(volume, os.W_OK):
        return Store(None, data_dir=volume / "persona-studio", migrate=True), None
    backup = f" (all but the last {cfg.backup_minutes:g} minutes are in {cfg.backup_repo})" if cfg.backup_repo else ""
    warning = (
        f"⚠️ **Labels, votes and conversations will be lost at the next restart{backup}**: this Space "
        "keeps them on its own disk, which is wiped when it restarts. To keep them, mount a Storage "
        f"Bucket as a volume at `{cfg.volume}` (Space settings), or set the `DATABASE_URL` secret to a "
        "PostgreSQL database; then restart the Space."
    )
    return Store(None, migrate=True), warning


def serve_store(cfg: AppConfig, store: Store) -> StoreAPI:
    """The store the app's handlers call: `store` itself, or its database served by a child
    process (`store_process`; store/process.py says why)."""
    from store.process import StoreProcess

    if cfg.store_process == "app" or (cfg.store_process == "auto" and sys.platform == "win32"):
        return store  # Windows: multiprocessing's Unix socket is not there
    return StoreProcess(store)


def build_demo(ctx: AppContext) -> gr.Blocks:
    import gradio as gr

    from ui.chat import build_chat_tab
    from ui.compare import build_compare_tab
    from ui.label import build_label_tab
    from ui.leaderboard import build_leaderboard
    from ui.organise import build_organise_tab
    from ui.results import build_results_tab

    with gr.Blocks(title="Persona Studio") as demo:
        gr.Markdown("# Persona Studio\nChat with personas, compare model versions, label answers.")
        if ctx.storage_warning:  # above the tabs: seen on every tab
            gr.Markdown(ctx.storage_warning, elem_id="storage-warning")
        with gr.Row():  # left-aligned: pop-up messages appear top right and would cover it
            rater = gr.Textbox(label="Rater", placeholder="your name (labels are saved under it)", scale=0,
                               min_width=300, visible=not ctx.signed_in, elem_id="rater-name")  # fmt: skip
            if ctx.oauth:
                gr.LoginButton(scale=0, min_width=300)
        with gr.Tab("Chat"):
            build_chat_tab(ctx, rater)
        with gr.Tab("Compare"):
            build_compare_tab(ctx, rater)
        with gr.Tab("Label") as label_tab:
            on_label = build_label_tab(ctx, rater)
        with gr.Tab("Results") as results_tab:
            refresh = build_results_tab(ctx)
            on_leaderboard = build_leaderboard(ctx)
        with gr.Tab("Organise") as organise_tab:
            on_organise = build_organise_tab(ctx)
        label_tab.select(**on_label, api_name=False)  # loads the queue (the logged-in rater has no box)
        results_tab.select(**refresh, api_name=False)
        results_tab.select(**on_leaderboard, api_name=False)
        organise_tab.select(**on_organise, api_name=False)  # the job's status, polled while it runs
    return demo


@entry_point(AppConfig, __doc__)
def main(cfg: AppConfig) -> int:
    from chatbot.session import warm
    from engines.factory import engine_loader  # on ZeroGPU it imports `spaces` before torch is used
    from engines.pool import EnginePool
    from store import QueueMix
    from store.backup import start_backup
    from ui.context import AppContext
    from ui.label import LABEL_SHORTCUTS_JS

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
    auth = parse_auth(cfg.auth)
    store, storage_warning = open_store(cfg)
    if cfg.backup_repo:
        start_backup(store, cfg.backup_repo, cfg.backup_minutes)
    served = serve_store(cfg, store)
    pool = EnginePool(cfg, loader=engine_loader(cfg.model_process, cfg.device, cfg.model_threads))
    base = pool.get("base")  # load now: a bad --model fails here, not in the first chat
    mix = QueueMix(cfg.label_gold_share, cfg.label_repeat_share)
    mix = mix if mix.gold_share or mix.repeat_share else None  # None: the plain queue, as before
    ctx = AppContext(pool, served, cfg.personas_dir, cfg.dataset, cfg.generation, cfg.label_overlap, auth=bool(auth),
                     oauth=cfg.oauth, storage_warning=storage_warning, label_mix=mix,
                     min_gold_accuracy=cfg.min_gold_accuracy)  # fmt: skip
    personas = ctx.personas()[0]
    if not personas:
        raise ConfigError(f"no valid persona files in {cfg.personas_dir}", "add a *.yaml persona there")
    # Prefill every persona's prompt in the background, so each chat's first reply only reads the message.
    threading.Thread(target=warm, args=(base, list(personas.values())), daemon=True).start()
    demo = build_demo(ctx)
    # Gradio recomputes its monitoring summary (pandas over up to 10,000 past events) after every
    # event by default: a fifth of the app's CPU under 100 raters (benchmarks/label_load). Read
    # when the queue is made; once per 1,000 events is plenty for the /monitoring page.
    os.environ.setdefault("GRADIO_ANALYTICS_CACHE_FREQUENCY", "1000")
    limit = cfg.concurrency_limit or (BATCHED_LIMIT if base.batches else UNBATCHED_LIMIT)
    demo.queue(default_concurrency_limit=limit, max_size=cfg.max_queue)
    demo.launch(
        server_name=cfg.host, server_port=cfg.port, auth=auth, js=LABEL_SHORTCUTS_JS, max_threads=cfg.max_threads
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
