"""Typed configs for every entry point: defaults -> YAML (`--config`) -> CLI flags.

Each job declares one pydantic model (`extra="forbid"`, every field with a description).
`parse_config(ChatConfig, argv)` builds `--help` from the fields, reads the YAML file, then
applies dotted overrides (`--generation.temperature 0.2`, `--lora.r 16`). Flag values are
parsed as YAML scalars, so `--limit 200`, `--seed null`, `--fractions [0.8,0.1,0.1]` work.
`@entry_point(ChatConfig, __doc__)` turns a job's `main(cfg)` into the `main(argv)` a script runs.
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from core.errors import ConfigError, PersonaStudioError

C = TypeVar("C", bound=BaseModel)


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, object, str]]:
    """(dotted name, default, description) for every leaf field, nested models flattened."""
    rows = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            rows += _fields(annotation, f"{prefix}{name}.")
        else:
            default = "required" if field.is_required() else field.get_default(call_default_factory=True)
            rows.append((f"{prefix}{name}", default, field.description or ""))
    return rows


def build_parser(model: type[BaseModel], description: str) -> argparse.ArgumentParser:
    # No abbreviations: `--data` must never silently mean `--data.path` or `--database_url`.
    parser = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )
    parser.add_argument("--config", type=Path, help="YAML file with any of the fields below")
    for name, default, help_text in _fields(model):
        parser.add_argument(
            f"--{name}", dest=name, default=argparse.SUPPRESS, metavar="V", help=f"{help_text} (default: {default})"
        )
    # `cli_shortcuts = {"data": "data.path"}` on a config class lets `--data X` mean `--data.path X`.
    for short, dotted in getattr(model, "cli_shortcuts", {}).items():
        parser.add_argument(
            f"--{short}", dest=dotted, default=argparse.SUPPRESS, metavar="V", help=f"same as --{dotted}"
        )
    return parser


def _set(tree: dict, dotted: str, value: object) -> None:
    *parents, leaf = dotted.split(".")
    for part in parents:
        tree = tree.setdefault(part, {})
    tree[leaf] = value


def parse_config(model: type[C], argv: list[str] | None = None, description: str = "") -> C:
    """Defaults, then `--config FILE`, then flags; raises `ConfigError` naming the bad key."""
    args = vars(build_parser(model, description).parse_args(sys.argv[1:] if argv is None else argv))
    config_file = args.pop("config", None)
    values: dict = {}
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist", "check the --config path")
        try:
            values = yaml.safe_load(config_file.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"config file {config_file} is not valid YAML: {err}", "fix the YAML syntax") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {config_file} must be a mapping of fields", "see --help for the fields")
    for dotted, raw in args.items():
        _set(values, dotted, yaml.safe_load(raw) if raw != "" else raw)
    return validate_config(model, values, source=str(config_file or "command line"))


def validate_config(model: type[C], values: dict, source: str = "config") -> C:
    try:
        return model.model_validate(values)
    except ValidationError as err:
        first = err.errors()[0]
        key = ".".join(str(p) for p in first["loc"])
        if first["type"] == "extra_forbidden":
            fix = "remove it or fix its spelling; `--help` lists every field"
        else:
            fix = "`--help` lists every field with its default"
        raise ConfigError(f"{source}: `{key}`: {first['msg']} (got {first.get('input')!r})", fix) from None


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
