"""Load YAML configuration files into pydantic models with errors that name the file and the key."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)

_ENV_PATTERN = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


class ConfigError(ValueError):
    """A configuration file is missing, unreadable or invalid. The message names file and key."""


def configs_dir() -> Path:
    """Directory holding the shipped YAML files (``SHELFWISE_CONFIG_DIR`` overrides)."""
    override = os.environ.get("SHELFWISE_CONFIG_DIR")
    return Path(override) if override else Path(__file__).resolve().parent


def expand_env(value: str, environ: Mapping[str, str] | None = None) -> str:
    """Expand ``${VAR}`` and ``${VAR:-default}`` in a string."""
    env = os.environ if environ is None else environ

    def repl(match: re.Match[str]) -> str:
        name, default = match.group(1), match.group(2)
        if name in env and env[name] != "":
            return env[name]
        if default is not None:
            return default
        raise ConfigError(f"environment variable {name} is not set and has no default")

    return _ENV_PATTERN.sub(repl, value)


def _expand_tree(node: Any, environ: Mapping[str, str] | None) -> Any:
    if isinstance(node, str):
        return expand_env(node, environ)
    if isinstance(node, list):
        return [_expand_tree(v, environ) for v in node]
    if isinstance(node, dict):
        return {k: _expand_tree(v, environ) for k, v in node.items()}
    return node


def apply_env_overrides(
    raw: dict[str, Any], overrides: Mapping[str, str], environ: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """Return a copy of ``raw`` where each dotted key in ``overrides`` (key -> ENV_VAR) is set
    from the environment variable when that variable is set and non-empty."""
    env = os.environ if environ is None else environ
    out: dict[str, Any] = _deep_copy(raw)
    for dotted, var in overrides.items():
        value = env.get(var)
        if value is None or value == "":
            continue
        node = out
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"cannot override {dotted} from {var}: {part} is not a mapping")
        node[parts[-1]] = value
    return out


def _deep_copy(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _deep_copy(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_deep_copy(v) for v in node]
    return node


def format_validation_error(path: Path | str, err: ValidationError) -> str:
    lines = [f"invalid configuration in {path}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"]) or "<root>"
        got = e.get("input")
        got_txt = "" if e["type"] == "missing" else f" (got {got!r})"
        lines.append(f"  key '{key}': {e['msg']}{got_txt}")
    return "\n".join(lines)


def read_yaml(path: Path | str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"configuration file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from exc
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: top level must be a mapping, got {type(data).__name__}")
    return data


def parse_model(
    model_cls: type[M],
    raw: dict[str, Any],
    source: Path | str,
    env_overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Validate an already-read mapping; ``source`` is used in error messages."""
    data = apply_env_overrides(raw, env_overrides or {}, environ)
    data = _expand_tree(data, environ)
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(source, exc)) from None


def load_config(
    path: Path | str,
    model_cls: type[M],
    env_overrides: Mapping[str, str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> M:
    """Read ``path`` and validate it as ``model_cls``.

    ``env_overrides`` maps dotted keys to environment variables that override them.
    Strings may reference ``${VAR:-default}``.
    """
    p = Path(path)
    return parse_model(model_cls, read_yaml(p), p, env_overrides, environ)


def resolve_config_path(name_or_path: str | Path, subdir: str | None = None) -> Path:
    """A bare name such as ``delay_risk`` resolves to ``configs/<subdir>/delay_risk.yaml``."""
    p = Path(name_or_path)
    if p.suffix in {".yaml", ".yml"} or p.is_file():
        return p
    base = configs_dir() / subdir if subdir else configs_dir()
    return base / f"{p.name}.yaml"
