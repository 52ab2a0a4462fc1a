"""Typed configs for every entry point: defaults -> environment -> YAML (`--config`) -> CLI flags.

Each job declares one pydantic model (`extra="forbid"`, every field with a description);
pydantic-settings does the reading: `CliSettingsSource` builds `--help` and the flags from the
fields (nested ones dotted: `--lora.r 16`, `--generation.temperature 0.2`),
`YamlConfigSettingsSource` reads the `--config` file, and a job whose config is a
`BaseSettings` (the app's) reads its environment variables itself, below both. Flag values
are validated by the model: `--limit 200`, `--flag false`, `--seed null`,
`--fractions [0.8,0.1,0.1]`. `@entry_point(ChatConfig, __doc__)` turns a job's `main(cfg)`
into the `main(argv)` a script runs.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from copy import copy
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, Field, ValidationError, create_model
from pydantic_settings import CliSettingsSource, SettingsConfigDict, SettingsError, YamlConfigSettingsSource

from core.errors import ConfigError, PersonaStudioError

C = TypeVar("C", bound=BaseModel)


def _reader(model: type[BaseModel], description: str) -> type[BaseModel]:
    """`model` as the flags and the YAML file see it: field names only (the env-var aliases of
    `AppConfig` are not flags), plus `--config`, and default factories called, so that `--help`
    shows `(default: 127.0.0.1)` rather than the factory's name."""

    class Reader(model):
        model_config = SettingsConfigDict(validate_by_alias=False, validate_by_name=True, case_sensitive=True)
        config: Path | None = Field(None, description="YAML file with any of these fields; flags override it.")

    shown = {}
    for name, field in model.model_fields.items():
        if field.default_factory is not None and not field.default_factory_takes_validated_data:
            field = copy(field)
            field.default, field.default_factory = field.default_factory(), None
            shown[name] = (field.annotation, field)
    return create_model(model.__name__, __base__=Reader, __doc__=description, **shown)


def _merge(base: dict, top: dict) -> dict:
    """`top` over `base`, nested sections merged key by key (a flag changes one key of a section)."""
    merged = dict(base)
    for key, value in top.items():
        nested = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if nested else value
    return merged


def _read_yaml(reader: type[BaseModel], path: Path) -> dict:
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist", "check the --config path")
    try:
        values = YamlConfigSettingsSource(reader, yaml_file=path)()
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}", "fix the YAML syntax") from None
    except (AttributeError, TypeError, ValueError):  # a list or a scalar at the top
        raise ConfigError(f"config file {path} must be a mapping of fields", "see --help for the fields") from None
    if "config" in values:
        raise ConfigError(f"config file {path} names another config file", "merge the two files into one")
    return values


def parse_config(model: type[C], argv: list[str] | None = None, description: str = "") -> C:
    """Defaults (and env for a `BaseSettings`), then `--config FILE`, then flags; a typo or a bad
    value raises `ConfigError` naming the key and where it came from."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # `cli_shortcuts = {"data": "data.path"}` on a config lets `--data X` mean `--data.path X`
    # (pydantic-settings' own shortcuts cannot take `--data`: it is the section's JSON flag).
    for short, dotted in getattr(model, "cli_shortcuts", {}).items():
        argv = [f"--{dotted}" if arg == f"--{short}" else arg.replace(f"--{short}=", f"--{dotted}=", 1) for arg in argv]
    reader = _reader(model, description)
    try:
        flags = CliSettingsSource(
            reader,
            cli_parse_args=argv,
            cli_prog_name=Path(sys.argv[0]).name,
            cli_avoid_json=True,  # sections are set key by key: `--lora.r 16`
            cli_hide_none_type=True,
            cli_parse_none_str="null",
            cli_exit_on_error=False,
        )()
    except SettingsError as err:
        raise ConfigError(f"command line: {err}".replace("error parsing CLI: ", ""), _fix(str(err))) from None
    config_file = flags.pop("config", None)
    values = _read_yaml(reader, Path(config_file)) if config_file else {}

    def source(key: tuple) -> str:
        if not key:  # a check across fields
            return f"{config_file} + command line" if config_file else "command line"
        if _holds(flags, key):
            return "command line"
        if _holds(values, key):
            return str(config_file)
        # Not a flag nor the file: a BaseSettings' environment, under an alias or prefix + name.
        name = str(key[0])
        prefix = model.model_config.get("env_prefix", "") if name in model.model_fields else ""
        return f"environment variable {(prefix + name).upper()}"

    return validate_config(model, _merge(values, flags), source)


def _holds(tree: dict, key: tuple) -> bool:
    for part in key:
        if not isinstance(tree, dict) or part not in tree:
            return False
        tree = tree[part]
    return True


def _fix(message: str) -> str:
    if "unrecognized arguments" in message:
        return "fix its spelling or drop it; `--help` lists every flag"
    return "`--help` lists every flag with its default"


def validate_config(model: type[C], values: dict, source: str | Callable[[tuple], str] = "config") -> C:
    """`model(**values)` (a `BaseSettings` adds its environment below `values`), or `ConfigError`
    naming the first bad key and `source` (or `source(key)`: where that key came from)."""
    try:
        return model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        where = source(first["loc"]) if callable(source) else source
        if where.startswith("environment"):
            fix = "fix or unset that environment variable"
        elif first["type"] == "extra_forbidden":
            fix = "remove it or fix its spelling; `--help` lists every field"
        else:
            fix = "`--help` lists every field with its default"
        raise ConfigError(f"{where}: `{key}`: {first['msg']} (got {first.get('input')!r})", fix) from None


def entry_point(model: type[C], description: str) -> Callable[[Callable[[C], int]], Callable[..., int]]:
    """Turn `main(cfg) -> exit code` into `main(argv=None) -> exit code`: parse argv, then run `main`.

    `--help` exits 0 before `main` runs, so its lazy imports stay lazy. A `PersonaStudioError` becomes
    `error: ...` on stderr and exit code 2: it already names the problem and the fix; a traceback would bury them.
    """

    def decorate(job: Callable[[C], int]) -> Callable[..., int]:
        @functools.wraps(job)
        def main(argv: list[str] | None = None) -> int:
            try:
                return job(parse_config(model, argv, description))
            except PersonaStudioError as err:
                print(f"error: {err}", file=sys.stderr)
                return 2

        return main

    return decorate
