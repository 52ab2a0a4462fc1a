"""`parse_config` / `entry_point`: defaults -> environment -> `--config` YAML -> flags, and the
argv -> config -> exit code wrapper every script's `main` goes through."""

from typing import ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.cli import entry_point, parse_config
from core.errors import ConfigError, DatasetError


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")
    r: int = Field(16, description="LoRA rank.")
    modules: list[str] = Field(default_factory=lambda: ["q_proj", "v_proj"], description="Layers.")


class JobConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    limit: int | None = Field(3, description="how many items")
    bertscore: bool = Field(True, description="score with BERTScore")
    name: str = Field("run", description="run name")
    lora: Section = Field(default_factory=Section)

    cli_shortcuts: ClassVar[dict[str, str]] = {"r": "lora.r"}


class ServerConfig(BaseSettings):
    """Like `app.AppConfig`: env PS_<FIELD>, and one field under a name a host sets."""

    model_config = SettingsConfigDict(env_prefix="PS_", validate_by_name=True, env_ignore_empty=True)
    port: int = Field(7860, validation_alias="SERVER_PORT", description="Port.")
    volume: str = Field("/data", description="Volume.")


def make_main(job):
    return entry_point(JobConfig, "A test job.")(job)


def test_flags_set_top_level_nested_boolean_null_and_list_values():
    cfg = parse_config(
        JobConfig, ["--limit", "null", "--bertscore", "false", "--lora.r", "4", "--lora.modules", "[a,b]"]
    )
    assert (cfg.limit, cfg.bertscore, cfg.lora.r, cfg.lora.modules) == (None, False, 4, ["a", "b"])
    assert parse_config(JobConfig, ["--bertscore", "true", "--name", "123"]).name == "123"  # a str stays a str
    assert parse_config(JobConfig, []) == JobConfig()


def test_yaml_then_flags_and_a_flag_changes_one_key_of_a_section(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("limit: 50\nlora:\n  r: 8\n  modules: [o_proj]\n")
    cfg = parse_config(JobConfig, ["--config", str(recipe), "--lora.r", "32"])
    assert (cfg.limit, cfg.lora.r, cfg.lora.modules) == (50, 32, ["o_proj"])
    assert cfg.model_fields_set == {"limit", "lora"}  # what a recipe or flag set, not the defaults


def test_shortcut_flag_means_its_dotted_field():
    assert parse_config(JobConfig, ["--r", "2"]).lora.r == 2
    assert parse_config(JobConfig, ["--r=5"]).lora.r == 5


@pytest.mark.parametrize(
    "yaml_text, argv, message",
    [
        ("", ["--limt", "3"], "unrecognized arguments: --limt 3"),
        ("", ["--limit", "many"], "command line: `limit`: Input should be a valid integer"),
        ("lora:\n  rr: 3\n", [], "recipe.yaml: `lora.rr`: Extra inputs are not permitted"),
        ("lora: {r: x}\n", [], "recipe.yaml: `lora.r`: Input should be a valid integer"),
        ("lora: {r: x}\n", ["--lora.r", "y"], "command line: `lora.r`"),  # the flag won, so it is the culprit
        ("lora: {r: [\n", [], "recipe.yaml is not valid YAML"),
        ("- limit\n", [], "recipe.yaml must be a mapping of fields"),
    ],
)
def test_typo_or_bad_value_names_the_key_and_where_it_came_from(tmp_path, yaml_text, argv, message):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(yaml_text)
    with pytest.raises(ConfigError, match="fix:") as err:
        parse_config(JobConfig, ["--config", str(recipe), *argv])
    assert message in str(err.value)


def test_missing_config_file_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        parse_config(JobConfig, ["--config", str(tmp_path / "nope.yaml")])


def test_settings_read_the_environment_below_yaml_and_flags(tmp_path, monkeypatch):
    monkeypatch.setenv("SERVER_PORT", "8000")
    monkeypatch.setenv("PS_VOLUME", "/mnt/bucket")
    assert (ServerConfig().port, ServerConfig().volume) == (8000, "/mnt/bucket")
    assert parse_config(ServerConfig, []).port == 8000
    recipe = tmp_path / "app.yaml"
    recipe.write_text("port: 9000\n")
    assert parse_config(ServerConfig, ["--config", str(recipe)]).port == 9000
    assert parse_config(ServerConfig, ["--config", str(recipe), "--port", "9001"]).port == 9001
    monkeypatch.setenv("SERVER_PORT", "")  # empty is unset, as `os.environ.get(...) or default` was
    assert parse_config(ServerConfig, []).port == 7860
    monkeypatch.setenv("SERVER_PORT", "eighty")
    with pytest.raises(ConfigError, match="(?s)environment variable SERVER_PORT: .*fix: fix or unset"):
        parse_config(ServerConfig, [])


def test_env_names_are_not_flags(capsys):
    with pytest.raises(ConfigError, match="unrecognized arguments: --SERVER_PORT"):
        parse_config(ServerConfig, ["--SERVER_PORT", "1"])


def test_success_returns_the_jobs_exit_code_with_the_parsed_config():
    seen = []
    main = make_main(lambda cfg: seen.append(cfg.limit) or 1)
    assert main(["--limit", "7"]) == 1
    assert seen == [7]


def test_error_inside_the_job_gives_exit_2_and_problem_and_fix_on_stderr(capsys):
    def job(cfg):
        print("started")
        raise DatasetError("data.csv has no rows", "check --data")

    assert make_main(job)([]) == 2
    out, err = capsys.readouterr()
    assert out == "started\n"
    assert err == "error: data.csv has no rows\n  fix: check --data\n"


def test_bad_flag_gives_exit_2_before_the_job_runs(capsys):
    main = make_main(lambda cfg: pytest.fail("the job ran"))
    assert main(["--limit", "many"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: command line: `limit`:") and "fix:" in err
    assert main(["--limit", "1", "--nope", "2"]) == 2
    assert "unrecognized arguments: --nope 2" in capsys.readouterr().err


def test_help_lists_fields_with_descriptions_and_defaults_and_exits_0(capsys):
    main = make_main(lambda cfg: pytest.fail("the job ran"))
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert "A test job." in out
    for flag in ["--config", "--limit", "--bertscore", "--lora.r", "--lora.modules"]:
        assert flag in out
    assert "how many items (default: 3)" in out
    assert "Layers. (default: ['q_proj', 'v_proj'])" in out  # the factory's value, not `<lambda>`


def test_a_bad_prefixed_env_value_names_its_variable(monkeypatch):
    monkeypatch.setenv("PS_VOLUME", "")
    monkeypatch.setenv("PS_PORT", "eighty")  # validate_by_name: prefix + field name works too
    with pytest.raises(ConfigError, match="environment variable PS_PORT: `port`"):
        parse_config(ServerConfig, [])
