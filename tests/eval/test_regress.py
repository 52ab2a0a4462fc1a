"""`python -m eval.regress` on the tiny model: exit codes, JUnit, labels, diffs, persona switches;
the shipped suite parses; one slow run of shipped scripts through the app's API."""

import json
import textwrap
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
import yaml

from core.errors import ConfigError, PersonaError
from core.persona import load_personas, render_system_prompt
from eval import regress
from eval.regress_checks import Checks, load_script, mentions, run_checks
from store import NewItem
from tests.conftest import REPO, serving, studio_context

PERSONAS = REPO / "personas"
SHIPPED = sorted((REPO / "eval" / "regression").glob("*.yaml"))

PASSING = """\
name: always_passes
persona: ada
turns:
  - user: Hello!
    checks:
      max_chars: 100000
      not_contains: ["zzzz-never"]
"""
MIXED = """\
name: mixed
persona: sam
turns:
  - user: hey, how are you?
    checks:
      min_chars: 0
  - user: what's your favourite food?
    checks:
      contains: ["zzzz-never"]
"""


def write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def run(tiny_model_dir, tmp_path, db_file_url):
    """main() on the tiny model with a store, runs folder and output folder under tmp_path."""

    def run(*scripts: Path, out: str = "out", extra: tuple = ()) -> tuple[int, Path]:
        argv = ["--model", str(tiny_model_dir), "--personas_dir", str(PERSONAS), "--runs_dir", str(tmp_path / "runs"),
                "--database_url", db_file_url, "--generation.max_new_tokens", "8",
                "--scripts", json.dumps([str(s) for s in scripts]), "--out", str(tmp_path / out), *extra]  # fmt: skip
        return regress.main(argv), tmp_path / out

    return run


def results(out: Path) -> dict:
    return json.loads((out / "results.json").read_text())


def test_passing_script_exits_0_with_a_clean_junit(run, tmp_path):
    code, out = run(write(tmp_path / "scripts", "pass.yaml", PASSING))
    assert code == 0
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.tag == "testsuite" and suite.get("tests") == "1" and suite.get("failures") == "0"
    assert suite.find("testcase").get("classname") == "always_passes"
    turn = results(out)["turns"][0]
    assert turn["passed"] and turn["reply"] and [c["check"] for c in turn["checks"]] == ["not_contains", "max_chars"]
    config = yaml.safe_load((out / "config.yaml").read_text())
    assert config["generation"]["max_new_tokens"] == 8 and config["generation"]["temperature"] == 0  # still greedy


def test_failing_check_exits_1_and_names_the_check(run, tmp_path, capsys):
    code, out = run(write(tmp_path / "scripts", "mixed.yaml", MIXED))
    assert code == 1
    suite = ET.parse(out / "junit.xml").getroot()
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    passed, failed = suite.findall("testcase")
    assert passed.find("failure") is None
    failure = failed.find("failure")
    assert "contains" in failure.get("message") and "zzzz-never" in failure.get("message")
    assert failed.get("line") == "7"
    printed = capsys.readouterr().out
    assert "FAIL" in printed and "1 of 2 checks passed" in printed


def test_unknown_check_names_the_check_file_and_line(run, tmp_path, capsys):
    path = write(tmp_path / "scripts", "typo.yaml", PASSING.replace("not_contains:", "not_contain:"))
    with pytest.raises(ConfigError, match=r"typo\.yaml:7: unknown check `not_contain` in turn 1") as err:
        load_script(path, load_personas(PERSONAS))
    assert "not_contains" in err.value.fix  # the known checks are listed
    code, _ = run(path)
    assert code == 2
    assert "error:" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("text", "error", "match"),
    [
        (PASSING.replace("persona: ada", "persona: adda"), PersonaError, r":2: there is no persona 'adda'"),
        (PASSING + "  - switch_persona: novva\n", PersonaError, r":8: there is no persona 'novva'"),
        (PASSING.replace("    checks:", "    chekcs:"), ConfigError, r":5: unknown key `chekcs` in turn 1"),
        (PASSING.replace("max_chars: 100000", "max_chars: lots"), ConfigError, r":6: `turns.0.checks.max_chars`"),
        (PASSING.replace("- user: Hello!", "- switch_persona: nova"), ConfigError, r":4: .*has no reply to check"),
        (PASSING.replace("max_chars: 100000", 'regex: "("'), ConfigError, r":6: .*not a valid regular expression"),
        ("- just a list\n", ConfigError, r"a script is a mapping"),
        (PASSING.replace("max_chars: 100000", "deflects: true"), ConfigError, r":6: .*'ada' has no `scope:`"),
    ],
)
def test_script_errors_point_at_the_line(tmp_path, text, error, match):
    with pytest.raises(error, match=match):
        load_script(write(tmp_path, "bad.yaml", text), load_personas(PERSONAS))


def test_usage_errors_exit_2(run, tmp_path, capsys):
    assert run(tmp_path / "missing.yaml")[0] == 2
    assert "does not exist" in capsys.readouterr().err
    script = write(tmp_path / "scripts", "pass.yaml", PASSING)
    assert run(script, extra=("--model", str(tmp_path / "no-model")))[0] == 2
    assert "error:" in capsys.readouterr().err


SCOPED = """\
name: scoped
persona: lovelace_guide
turns:
  - user: Can you recommend a good laptop for gaming?
    checks:
      deflects: true
  - user: How did Ada Lovelace meet Charles Babbage?
    checks:
      deflects: false
"""


@pytest.mark.parametrize(("run_guard", "script_guard", "passed"), [
    (True, True, [True, True]),  # the off-topic question is deflected, the other reaches the model
    (False, True, [False, True]),  # --scope_guard false: both reach the model
    (True, False, [False, True]),  # the script's `scope_guard: false`
])  # fmt: skip
def test_deflects_checks_the_scope_guard_which_the_run_or_the_script_turns_off(
    tiny_engine, tmp_path, db_file_url, run_guard, script_guard, passed
):
    personas = load_personas(PERSONAS)
    cfg = regress.RegressConfig.model_validate({"scope_guard": run_guard})
    text = SCOPED if script_guard else SCOPED.replace("turns:", "scope_guard: false\nturns:")
    file = load_script(write(tmp_path, "scoped.yaml", text), personas)
    chat = regress.LocalChat(tiny_engine, cfg.generation.model_copy(update={"max_new_tokens": 8}))
    scores = {key: 0.0 for key in personas}  # persona similarity is not what this test is about
    records = regress.run_script(chat, file, personas, lambda reply: scores, 0.35, cfg.scope_guard)
    assert [r["passed"] for r in records] == passed
    off_topic = records[0]
    assert off_topic["deflected"] == passed[0]
    assert (off_topic["reply"] == personas["lovelace_guide"].scope.deflection) == passed[0]
    if not passed[0]:
        assert off_topic["checks"][0]["detail"] == "a reply, not the deflection"
    cfg = cfg.model_copy(update={"labels": "all", "database_url": db_file_url})
    regress.queue_labels(cfg, "base", records, personas)  # a deflection is not the version's answer
    assert ["label_item" in r for r in records] == [not r["deflected"] for r in records]


def test_failed_replies_are_queued_before_the_rest(run, store, tmp_path):
    context = [{"role": "user", "content": "hi"}]
    # an item already waiting, not flagged
    [older] = store.add_label_items([NewItem("eval", "Ada", {"name": "Ada"}, context, "hello", "older")])
    code, out = run(write(tmp_path / "scripts", "mixed.yaml", MIXED), extra=("--labels", "all"))
    passed, failed = results(out)["turns"]
    assert code == 1 and older < failed["label_item"] < passed["label_item"]
    first = store.next_item("rita", source="eval").item
    assert (first.id, first.answer, first.persona_name) == (failed["label_item"], failed["reply"], "Sam")
    assert first.source == "eval" and first.model_version == results(out)["model_version"]
    assert first.context[-2:] == [
        {"role": "assistant", "content": passed["reply"]},
        {"role": "user", "content": failed["user"]},
    ]
    assert (first.priority, store.item(passed["label_item"]).priority) == (1, 0)
    order = []
    while (item := store.next_item("rita", source="eval").item) is not None:
        order.append(item.id)
        store.label(item.id, "rita", "good")
    assert order == [failed["label_item"], older, passed["label_item"]]  # flagged first, then by age


def test_only_flagged_replies_are_queued_by_default(run, store, tmp_path):
    _, out = run(write(tmp_path / "scripts", "mixed.yaml", MIXED))
    passed, failed = results(out)["turns"]
    assert "label_item" not in passed
    assert store.item(failed["label_item"]).answer == failed["reply"]
    assert store.next_item("rita").progress.total == 1


def test_diff_against_the_newest_run_of_another_version(run, store, tmp_path, capsys):
    script = write(tmp_path / "scripts", "mixed.yaml", MIXED)
    _, first = run(script, out="first")
    previous = results(first)
    previous["model_version"], previous["created"] = "older", "2000-01-01T00:00:00"
    previous["turns"][0]["reply"] = "a reply the older version gave"
    previous["turns"][1]["checks"][0]["passed"] = True  # the older version passed this one
    older = tmp_path / "runs" / "older" / "regress" / "20000101-000000"
    older.mkdir(parents=True)
    (older / "results.json").write_text(json.dumps(previous))
    capsys.readouterr()

    _, second = run(script, out="second")
    now = results(second)
    assert now["compare_to"] == str(older / "results.json") and now["compared_version"] == "older"
    changed, same = now["turns"]
    assert (
        changed["diff"]["status"] == "changed" and changed["diff"]["previous_reply"] == "a reply the older version gave"
    )
    assert same["diff"] == {"status": "same", "previous_reply": same["reply"], "pass_to_fail": ["contains"],
                            "fail_to_pass": []}  # fmt: skip
    assert now["diff"]["pass_to_fail"] == ["mixed turn 2 contains"]
    printed = capsys.readouterr().out
    assert "1 of 2 replies changed" in printed and "pass -> fail: mixed turn 2 contains" in printed
    assert "label_item" in changed  # changed, though it passed: queued for labelling
    assert store.item(changed["label_item"]).priority == 1


def test_persona_switch_changes_the_system_prompt(run, tmp_path, tiny_engine, monkeypatch):
    seen, negatives = [], []

    class Spy:  # records what the session sends to the engine; the rest is the tiny engine's
        def __getattr__(self, name):
            return getattr(tiny_engine, name)

        def stream(self, messages, settings, negative=None):
            seen.append(messages)
            negatives.append(negative)
            yield from tiny_engine.stream(messages, settings, negative)

    monkeypatch.setattr(regress, "load_engine", lambda cfg: Spy())
    script = write(tmp_path / "scripts", "switch.yaml", """\
        name: switch
        persona: ada
        turns:
          - user: Who are you?
          - switch_persona: nova
          - user: Who are you now?
        """)  # fmt: skip
    code, out = run(script)
    assert code == 0
    turns = results(out)["turns"]
    assert [(t["turn"], t["persona"], t["persona_name"]) for t in turns] == [(1, "ada", "Ada"), (3, "nova", "Nova")]
    personas = load_personas(PERSONAS)
    assert [m[0]["content"] for m in seen] == [
        render_system_prompt(personas["ada"]),
        render_system_prompt(personas["nova"]),
    ]
    assert seen[1][1:] == [{"role": "user", "content": "Who are you now?"}]  # Nova starts afresh
    # After the switch the reply is steered away from the same prompt under Ada; before it, nothing.
    assert negatives == [None, [{"role": "system", "content": render_system_prompt(personas["ada"])}, *seen[1][1:]]]


def test_checks_match_words_and_judge_persona_fit():
    assert mentions("I am Ada.", "ada") and not mentions("I live in Canada", "Ada")
    assert mentions("Open 8:00-20:00", "8:00") and mentions("Brightline's team", "Brightline")
    personas = load_personas(PERSONAS)

    def check(reply, key="nova", scores=None, **checks):
        scorer = lambda _: scores or {}  # noqa: E731
        return {c["check"]: c["passed"] for c in run_checks(Checks(**checks), reply, key, personas[key], scorer, 0.35)}

    assert check("No, I'm Nova.", identity=True, not_contains=["I am ChatGPT"]) == {
        "not_contains": True, "identity": True}  # fmt: skip
    assert check("I'm Ada.", identity=True, any_of=["x", "ada"], regex=r"^I'm") == {
        "any_of": True, "regex": True, "identity": False}  # fmt: skip
    assert check("abc", max_chars=2, min_chars=3) == {"max_chars": False, "min_chars": True}
    assert check("r", in_persona=True, scores={"nova": 0.5, "ada": 0.4}) == {"in_persona": True}
    assert check("r", in_persona=True, scores={"nova": 0.5, "ada": 0.6}) == {"in_persona": False}  # not closest
    assert check("r", in_persona=True, scores={"nova": 0.3, "ada": 0.1}) == {"in_persona": False}  # below threshold


@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_shipped_script_parses(path):
    file = load_script(path, load_personas(PERSONAS))
    assert file.script.name == path.stem
    assert any(turn.checks.given() for turn in file.script.turns)


def test_a_long_script_reports_persona_drift_per_window(run, tmp_path, capsys):
    turns = "".join(f"  - user: Tell me one more thing, number {i}.\n" for i in range(1, 13))
    script = write(tmp_path / "scripts", "long.yaml", f"name: long\npersona: ada\nturns:\n{turns}")
    _, out = run(script)
    data = results(out)
    [found] = data["drift"]
    assert found["script"] == "long" and found["persona"] == "ada"
    assert [w["turns"] for w in found["windows"]] == ["1-5", "6-10", "11-12"]
    sims = [t["persona_similarity"] for t in data["turns"]]
    assert found["windows"][2]["similarity"] == pytest.approx((sims[10] + sims[11]) / 2)
    assert all(isinstance(t["closest_persona"], bool) for t in data["turns"])
    assert (out / "drift.png").is_file()
    assert "persona drift, long" in capsys.readouterr().out


def test_the_suite_covers_every_persona():
    assert len(SHIPPED) >= 15
    personas = load_personas(PERSONAS)
    started = {load_script(p, personas).script.persona for p in SHIPPED}
    assert started == set(personas)


@pytest.mark.slow
def test_shipped_scripts_through_the_app_api_match_a_local_run(default_engine, store, tmp_path, monkeypatch):
    from engines.config import GenerationSettings

    monkeypatch.setattr(regress, "load_engine", lambda cfg: default_engine)
    scripts = [REPO / "eval" / "regression" / f"{name}.yaml" for name in ("nova_identity", "switch_ada_to_nova")]
    argv = ["--model", "base", "--personas_dir", str(PERSONAS), "--runs_dir", str(tmp_path / "runs"),
            "--database_url", f"sqlite:///{tmp_path / 'regress.db'}", "--generation.max_new_tokens", "24",
            "--scripts", json.dumps([str(s) for s in scripts])]  # fmt: skip
    ctx = studio_context(tmp_path, store, {"base": default_engine}, GenerationSettings())
    with serving(ctx) as url:
        code = regress.main([*argv, "--app_url", url, "--out", str(tmp_path / "app")])
    assert code in (0, 1)
    via_app = results(tmp_path / "app")
    assert via_app["app_url"] == url and via_app["model_version"] == "base"
    assert via_app["summary"]["scripts"] == 2 and via_app["summary"]["turns"] == 5
    for turn in via_app["turns"]:
        assert set(turn) >= {"script", "turn", "line", "persona", "user", "reply", "context", "checks", "passed"}
        assert turn["reply"] and "&#" not in turn["reply"] and all(set(c) == {"check", "passed", "detail"}
                                                                   for c in turn["checks"])  # fmt: skip
    assert [t["persona"] for t in via_app["turns"]][2:] == ["ada", "nova", "nova"]
    suite = ET.parse(tmp_path / "app" / "junit.xml").getroot()
    assert int(suite.get("tests")) == 5 and int(suite.get("failures")) == via_app["summary"]["failed_turns"]

    # The same scripts on the same engine without the app: the same greedy replies.
    regress.main([*argv, "--out", str(tmp_path / "local"), "--compare_to", str(tmp_path / "app")])
    local = results(tmp_path / "local")
    assert [t["reply"] for t in local["turns"]] == [t["reply"] for t in via_app["turns"]]
    assert local["diff"]["changed"] == 0
