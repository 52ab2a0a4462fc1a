"""Persona Studio as a Hugging Face Space: the settings a Space gives it, versions from the hub,
raters signed in with Hugging Face, labels kept on a volume (or a warning on every tab), the
backup files, ZeroGPU's wrapper, and `python app.py` booted in a fresh venv holding exactly
requirements.txt under a Space's environment (hub ids stand in as local folders: no network).

What cannot be tried here: the Space's own build (its image, `preload_from_hub`), a real
Hugging Face sign-in (the session cookie is made here the way Gradio's OAuth callback stores
it), a Storage Bucket mount, the CommitScheduler push, and a real ZeroGPU worker (`spaces` is
replaced by a recorder that checks what would be decorated and with which duration).
"""

import base64
import hashlib
import importlib
import json
import os
import shutil
import subprocess
import sys
import time
import types
from pathlib import Path

import gradio as gr
import pytest

from core.default_model import HUB_ID
from core.errors import ModelLoadError
from engines.config import EngineConfig, GenerationSettings
from engines.engine import TransformersEngine
from engines.pool import EnginePool
from store import NewItem
from store.backup import export_tables
from tests.conftest import REPO, studio_context
from tests.test_app_kill import free_port, wait_until_up
from ui.raters import rater_for

SPACE = {"SPACE_ID": "persona/persona-studio", "SYSTEM": "spaces"}
# What a Space with `hf_oauth: true` sets; the provider URL is only fetched when someone signs in.
OAUTH = {
    "OAUTH_CLIENT_ID": "test-client",
    "OAUTH_CLIENT_SECRET": "test-secret",
    "OAUTH_SCOPES": "openid profile",
    "OPENID_PROVIDER_URL": "http://127.0.0.1:9",
}
PERSONA = {"name": "Ada", "facts": ["I build clocks.", "I keep bees."]}


@pytest.fixture
def space(monkeypatch):
    """This process as a Space (no volume, no database, no model named)."""
    for name in ("PERSONA_STUDIO_MODEL", "DATABASE_URL", "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"):
        monkeypatch.delenv(name, raising=False)
    for name, value in SPACE.items():
        monkeypatch.setenv(name, value)


def profile(username: str) -> gr.OAuthProfile:
    return gr.OAuthProfile({"name": username.title(), "preferred_username": username, "profile": "", "picture": ""})


# -- boots as a Space ---------------------------------------------------------------------


def test_on_a_space_the_app_listens_everywhere_and_loads_the_base_from_the_hub(space, monkeypatch):
    from app import AppConfig

    cfg = AppConfig()
    assert (cfg.host, cfg.port, cfg.model, cfg.volume) == ("0.0.0.0", 7860, HUB_ID, "/data")
    monkeypatch.setenv("PERSONA_STUDIO_MODEL", "me/bigger-model")
    assert AppConfig().model == "me/bigger-model"
    for name in SPACE:
        monkeypatch.delenv(name)
    assert (AppConfig(model="default").host, AppConfig().oauth) == ("127.0.0.1", False)  # local: as before


@pytest.fixture
def hub_adapter(tiny_model_dir, tmp_path) -> Path:
    """A LoRA adapter on the tiny model whose weights are not the identity (B != 0), saved as
    an adapter repo's files are; its folder stands in for the repo id."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(tiny_model_dir), LoraConfig(r=4, target_modules=["q_proj"])
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.fill_(0.5)
    model.save_pretrained(tmp_path / "adapter-repo")
    return tmp_path / "adapter-repo"


def test_versions_listed_from_the_hub_load_their_adapter(tiny_model_dir, hub_adapter, tmp_path, monkeypatch):
    monkeypatch.setenv("PERSONA_STUDIO_MODEL", str(tiny_model_dir))
    monkeypatch.setenv("PERSONA_STUDIO_HUB_VERSIONS", f"ada-v2={hub_adapter}")
    pool = EnginePool(EngineConfig(model=str(tiny_model_dir), runs_dir=str(tmp_path / "runs")))
    assert pool.versions() == ["base", "ada-v2"] and pool.newest() == "ada-v2"
    base, tuned = pool.get("base"), pool.get("ada-v2")
    q = "model.layers.0.self_attn.q_proj.weight"
    assert not base.model.state_dict()[q].equal(tuned.model.state_dict()[q])  # the LoRA delta merged in
    k = "model.layers.0.self_attn.k_proj.weight"
    assert base.model.state_dict()[k].equal(tuned.model.state_dict()[k])  # and nothing else changed

    monkeypatch.setenv("PERSONA_STUDIO_HUB_VERSIONS", "base=me/adapter")
    with pytest.raises(ModelLoadError, match="name=user/adapter-repo"):
        pool.versions()


# -- labels survive restarts --------------------------------------------------------------


def test_on_a_space_the_store_goes_to_the_volume_else_every_tab_warns(space, tmp_path, monkeypatch):
    from app import AppConfig, open_store

    monkeypatch.chdir(tmp_path)  # the fallback store lands in ./data
    volume = tmp_path / "volume"
    store, warning = open_store(AppConfig(volume=str(volume)))
    assert warning and f"`{volume}`" in warning and "DATABASE_URL" in warning and "lost at the next restart" in warning
    assert store.url.endswith(f"{tmp_path}/data/persona_studio.db")
    store.close()

    volume.mkdir()
    store, warning = open_store(AppConfig(volume=str(volume)))
    assert warning is None and store.url.endswith(f"{volume}/persona-studio/persona_studio.db")
    store.close()
    store, warning = open_store(AppConfig(volume=str(tmp_path / "none"), database_url=f"sqlite:///{tmp_path}/x.db"))
    assert warning is None and store.url.endswith("x.db")
    store.close()


def test_backup_files_hold_every_table_and_change_only_with_it(store, tmp_path):
    import datasets

    ids = store.add_label_items(
        [NewItem("eval", "Ada", PERSONA, [{"role": "user", "content": "Hi?"}], "Hello!", "base")]
    )
    store.label(ids[0], "rita", "good", "warm")
    files = export_tables(store, tmp_path / "backup")
    assert {"labels", "label_items", "conversations", "turns", "raters"} <= set(files)
    labels = datasets.load_dataset("json", data_files=str(files["labels"]), split="train")  # what the hub viewer reads
    assert (labels.num_rows, labels[0]["item_id"], labels[0]["verdict"], labels[0]["comment"]) == (
        1,
        ids[0],
        "good",
        "warm",
    )
    items = [json.loads(line) for line in files["label_items"].read_text().splitlines()]
    assert items[0]["persona"] == PERSONA and items[0]["answer"] == "Hello!"

    before = {name: path.stat().st_mtime_ns for name, path in files.items()}
    time.sleep(0.01)
    export_tables(store, tmp_path / "backup")
    assert {name: path.stat().st_mtime_ns for name, path in files.items()} == before  # nothing to push
    store.label(ids[0], "sam", "bad")
    export_tables(store, tmp_path / "backup")
    changed = {name for name, path in files.items() if path.stat().st_mtime_ns != before[name]}
    assert {"labels", "raters"} <= changed and not {"conversations", "turns", "label_items"} & changed
    assert len(files["labels"].read_text().splitlines()) == 2


# -- raters sign in with Hugging Face ------------------------------------------------------


def test_the_rater_is_the_signed_in_user_whatever_name_is_typed(store, tmp_path):
    ctx = studio_context(tmp_path, store, {})
    assert rater_for(ctx, "rita", None, None) == "rita"  # neither sign-in: the typed name
    ctx.oauth = True
    assert rater_for(ctx, "mallory", profile("rita"), None) == "rita"
    with pytest.raises(gr.Error, match="Sign in with Hugging Face"):
        rater_for(ctx, "rita", None, None)  # not signed in: no name of one's own choosing
    ctx.oauth, ctx.auth = False, True
    with pytest.raises(gr.Error, match="Log in"):
        rater_for(ctx, "rita", None, None)


@pytest.fixture
def signed_in_demo(store, tmp_path, tiny_engine, monkeypatch):
    """The whole app (not launched) with Hugging Face sign-in on, as on a Space with hf_oauth."""
    import gradio.oauth

    for name, value in (SPACE | OAUTH).items():
        monkeypatch.setenv(name, value)
        monkeypatch.setattr(gradio.oauth, name, value, raising=False)
    from app import build_demo

    ctx = studio_context(tmp_path, store, {"base": tiny_engine}, GenerationSettings(temperature=0, max_new_tokens=4))
    ctx.oauth = True
    demo = build_demo(ctx)
    return ctx, {fn.api_name: fn.fn for fn in demo.fns.values()}, demo


def test_signed_in_handlers_label_under_the_profile_and_ignore_the_typed_name(signed_in_demo):
    ctx, fns, demo = signed_in_demo
    assert any(isinstance(block, gr.LoginButton) for block in demo.blocks.values())
    assert not next(b for b in demo.blocks.values() if getattr(b, "elem_id", None) == "rater-name").visible
    ids = ctx.store.add_label_items(
        [NewItem("eval", "Ada", PERSONA, [{"role": "user", "content": f"Q{i}?"}], f"A{i}.", "base") for i in range(2)]
    )
    shown = fns["next_item"]("mallory", None, profile("rita"))
    assert shown[0] == ids[0]
    fns["label"](ids[0], "good", "", "mallory", None, profile("rita"))
    with pytest.raises(gr.Error, match="Sign in"):
        fns["label"](ids[1], "bad", "", "mallory", None, None)
    assert [(r.item_id, r.rater) for r in ctx.store.label_rows()] == [(ids[0], "rita")]

    *_, turn_id = list(fns["chat"]("Hello", "ada"))[-1]
    assert fns["label_reply"](turn_id, "bad", None, profile("sam"), rater="mallory") == "saved: bad (by sam)"
    with pytest.raises(gr.Error, match="Sign in"):
        fns["label_reply"](turn_id, "good", None, None, rater="mallory")
    assert sorted(r.rater for r in ctx.store.label_rows()) == ["rita", "sam"]

    conv_a, _, conv_b, _ = list(fns["compare"]("Hello", "ada", "base", "base"))[-1]
    said = fns["vote"](conv_a, conv_b, "a", None, profile("kim"), rater="mallory")
    assert said.endswith("by kim") and [p.rater for p in ctx.store.preferences()] == ["kim"]
    with pytest.raises(gr.Error, match="Sign in"):
        fns["vote"](conv_a, conv_b, "b", None, None, rater="mallory")


# -- ZeroGPU ---------------------------------------------------------------------------------


def test_off_zerogpu_the_gpu_wrapper_changes_nothing(tiny_engine):
    from engines import zerogpu
    from engines.factory import engine_loader, load_engine

    assert not zerogpu.ON_ZERO_GPU and zerogpu.spaces is None
    assert {"stream_reply", "generate_batch"} <= set(zerogpu.GPU_FUNCTIONS)  # the two that run the model
    fn = lambda: None  # noqa: E731
    assert zerogpu.gpu(zerogpu.reply_seconds)(fn) is fn
    assert engine_loader("app") is load_engine  # the app's engines are the plain ones


@pytest.fixture
def zerogpu_with_recorder(monkeypatch):
    """engines.zerogpu imported as on a ZeroGPU Space, with `spaces` a recorder of what
    `spaces.GPU` is given and called with; the real module is restored afterwards."""
    calls = []

    def GPU(duration):
        def wrap(fn):
            def run(*args, **kwargs):
                calls.append((fn.__name__, duration(*args, **kwargs)))
                return fn(*args, **kwargs)

            return run

        return wrap

    monkeypatch.setitem(sys.modules, "spaces", types.SimpleNamespace(GPU=GPU, __spec__=object()))
    monkeypatch.setenv("SPACES_ZERO_GPU", "true")
    from engines import zerogpu

    yield importlib.reload(zerogpu), calls
    monkeypatch.undo()
    importlib.reload(zerogpu)


def test_on_zerogpu_every_generation_runs_in_a_gpu_call_sized_to_it(
    zerogpu_with_recorder, tiny_model_dir, store, tmp_path
):
    from ui import conversations

    zerogpu, calls = zerogpu_with_recorder
    cfg = EngineConfig(model=str(tiny_model_dir), runs_dir=str(tmp_path / "runs"))
    from engines.factory import engine_loader

    pool = EnginePool(cfg, loader=engine_loader())
    engine = pool.get("base")
    assert isinstance(engine, zerogpu.GPUEngine)
    assert type(engine.engine) is TransformersEngine  # not batched: each reply is its own GPU call
    ctx = studio_context(tmp_path, store, {})
    ctx.pool = pool
    settings = GenerationSettings(temperature=0, max_new_tokens=40)
    steps = list(conversations.exchange(ctx, "Hello", "ada", ctx.persona("ada"), "base", settings))
    assert len(steps) > 2  # streamed piece by piece through the GPU call
    assert calls == [("stream_reply", zerogpu.MARGIN_S + 40 // zerogpu.TOKENS_PER_SECOND)]
    hi, short = [{"role": "user", "content": "Hi"}], settings.model_copy(update={"max_new_tokens": 20})
    assert "".join(engine.stream(hi, short)) == "".join(engine.engine.stream(hi, short))  # the same reply
    replies = engine.generate([hi, hi], short, batch_size=1)
    assert len(replies) == 2 and calls[-1] == ("generate_batch", zerogpu.MARGIN_S + 2 * 20 // zerogpu.TOKENS_PER_SECOND)
    # After a persona switch the reply is guided: a second forward per token, twice the GPU time asked for.
    negative = [{"role": "system", "content": "You are Sam."}, *hi]
    assert "".join(engine.stream(hi, short, negative)) == "".join(engine.engine.stream(hi, short, negative))
    assert calls[-1] == ("stream_reply", zerogpu.MARGIN_S + 2 * 20 // zerogpu.TOKENS_PER_SECOND)


# -- `python app.py` as a Space boots it ----------------------------------------------------

CHROMIUM = Path("/usr/bin/chromium")
SHOTS = Path("/tmp/persona-shots")
# Preinstalled on every Gradio Space, not in requirements.txt: Gradio itself needs it there
# (with SYSTEM=spaces its server runs `spaces`' reload watcher, and fails without the package).
SPACE_IMAGE = ["spaces==0.51.3"]


def space_venv() -> Path:
    """A venv with exactly requirements.txt (pip, as a Space installs it) and what a Space's image
    has, plus the CPU torch pin so no CUDA wheels come down. Kept per content of those files and
    Python: a fresh one when they change (~4.5 min on 2 cores, mostly downloads), reused after."""
    from core.default_model import cache_dir

    files = [REPO / "requirements.txt", REPO / "constraints-cpu.txt"]
    content = b"".join(f.read_bytes() for f in files) + " ".join([*SPACE_IMAGE, sys.version]).encode()
    key = hashlib.sha256(content).hexdigest()[:12]
    venv = cache_dir() / "space-venv" / key
    if (venv / ".installed").is_file():
        return venv
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "pip"), "install", "--quiet", "--no-compile", "--disable-pip-version-check"]
    subprocess.run([*pip, "-r", str(files[0]), "-c", str(files[1])], check=True, timeout=1800)
    subprocess.run([*pip, *SPACE_IMAGE, "-c", str(files[1])], check=True, timeout=600)
    (venv / ".installed").touch()
    return venv


def checkout(to: Path) -> Path:
    """The repository's files as a Space gets them (tracked and new, not ignored): no data/, no runs/."""
    listed = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO, capture_output=True)
    for name in filter(None, listed.stdout.decode().split("\0")):
        if (REPO / name).is_file():
            (to / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, to / name)
    return to


def proc_port(url: str) -> int:
    return int(url.rstrip("/").rsplit(":", 1)[1])


def listening_on(port: int) -> str:
    """The IPv4 address a socket listens on at `port` (Linux /proc/net/tcp: hex, state 0A)."""
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            return ".".join(str(int(address[i : i + 2], 16)) for i in (6, 4, 2, 0))
    return ""


def session_cookie(username: str) -> str:
    """The `session` cookie Gradio's OAuth callback leaves after a Hugging Face sign-in
    (starlette's SessionMiddleware, keyed as gradio/oauth.py keys it)."""
    from itsdangerous import TimestampSigner

    userinfo = {"preferred_username": username, "name": username.title(), "profile": "", "picture": ""}
    info = {"access_token": "t", "expires_at": int(time.time()) + 3600, "userinfo": userinfo}
    secret = hashlib.sha256((OAUTH["OAUTH_CLIENT_SECRET"] + "-v4").encode()).hexdigest()
    return TimestampSigner(secret).sign(base64.b64encode(json.dumps({"oauth_info": info}).encode())).decode()


@pytest.fixture
def boot(tmp_path, tiny_model_dir):
    """boot(volume) -> (url, log): `python app.py` in the Space venv, in a checkout, with a
    Space's environment; the hub model id is the tiny model's folder."""
    venv, app_dir, procs = space_venv(), checkout(tmp_path / "space"), []

    def run(volume: Path) -> tuple[str, subprocess.Popen]:
        port = free_port()
        env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
               "GRADIO_ANALYTICS_ENABLED": "False", "GRADIO_SERVER_PORT": str(port), **SPACE, **OAUTH,
               "PERSONA_STUDIO_MODEL": str(tiny_model_dir), "PERSONA_STUDIO_VOLUME": str(volume)}  # fmt: skip
        log = tmp_path / f"app-{port}.log"
        with open(log, "ab") as out:
            procs.append(
                subprocess.Popen([venv / "bin" / "python", "app.py"], cwd=app_dir, env=env, stdout=out, stderr=out)
            )
        url = f"http://127.0.0.1:{port}/"
        wait_until_up(procs[-1], url, log)
        return url, procs[-1]

    yield run
    for proc in procs:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_app_boots_as_a_space_chats_signs_raters_in_and_warns_without_a_volume(boot, tmp_path):
    from gradio_client import Client

    url, proc = boot(tmp_path / "no-volume")
    assert listening_on(proc_port(url)) == "0.0.0.0"  # every interface, as a Space needs
    conv_id, reply, turn_id = Client(url, verbose=False).predict(message="Hello!", persona="ada", api_name="/chat")
    assert conv_id and reply.strip() and turn_id

    with pytest.raises(Exception, match="Sign in with Hugging Face"):
        Client(url, verbose=False).predict(turn_id=turn_id, verdict="good", rater="rita", api_name="/label_reply")
    signed_in = Client(url, verbose=False, headers={"Cookie": f"session={session_cookie('rita')}"})
    said = signed_in.predict(turn_id=turn_id, verdict="good", rater="mallory", api_name="/label_reply")
    assert said == "saved: good (by rita)"  # the typed name is ignored

    if os.access(CHROMIUM, os.X_OK):
        from playwright.sync_api import expect, sync_playwright

        from tests.ui.conftest import CHROMIUM_ARGS

        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
            page = browser.new_page()
            page.goto(url, wait_until="domcontentloaded")
            for tab in ("Chat", "Label"):
                page.get_by_role("tab", name=tab, exact=True).click()
                expect(page.locator("#storage-warning")).to_contain_text("lost at the next restart", timeout=60_000)
            expect(page.get_by_role("button", name="Sign in with Hugging Face")).to_be_visible()
            expect(page.locator("#rater-name")).to_be_hidden()  # no typed names while sign-in is on
            SHOTS.mkdir(exist_ok=True)
            page.screenshot(path=SHOTS / "space-no-volume.png", full_page=True)
            browser.close()
    # With a volume the store goes there and no tab warns: open_store's choice, tested in this
    # process above (a second boot of the Space cost the suite half a minute to a minute).


def test_front_matter_makes_the_repo_a_space_with_sign_in_and_the_base_preloaded():
    import yaml

    from tests.test_requirements import pinned, read

    meta = yaml.safe_load((REPO / "README.md").read_text().split("---\n")[1])
    assert meta["sdk"] == "gradio" and meta["app_file"] == "app.py" and meta["hf_oauth"] is True
    assert meta["sdk_version"] == pinned(read("requirements.txt")["gradio"])  # the Space runs what we test
    assert len(meta["short_description"]) <= 60 and meta["tags"] and meta["datasets"]
    assert HUB_ID in meta["models"] and any(entry.split()[0] == HUB_ID for entry in meta["preload_from_hub"])
