"""Reading a scenario file: bytes -> TOML -> the kind's file model -> cross-field checks -> Scenario."""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path

from pydantic import ValidationError

from lab.errors import ConfigError
from lab.scenario.checks import semantic_problems
from lab.scenario.layout import kind_named, layout
from lab.scenario.lines import line_index
from lab.scenario.messages import pydantic_problems, report, toml_error
from lab.scenario.model import Scenario


def load_scenario(path: Path) -> Scenario:
    """Read, parse and validate a scenario file; ConfigError lists every problem."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read scenario: {exc.strerror}") from None
    return parse_scenario(raw, path)


def parse_scenario(raw: bytes, path: Path) -> Scenario:
    """Validate scenario bytes; `path` only names the source in messages."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[:exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{line}: not UTF-8 text (byte offset {exc.start})") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(toml_error(path, exc)) from None
    lines = line_index(text)
    kind = kind_named(data)
    file_layout = layout(kind)
    try:
        spec = file_layout.file.model_validate(data)
    except ValidationError as exc:
        raise report(path, lines, pydantic_problems(exc, file_layout)) from None
    assert kind is not None  # an unknown or missing workload fails validation above
    matrix = {key: tuple(getattr(spec.matrix, key)) for key in data.get("matrix", {})}  # file order
    scenario = Scenario(spec, matrix, path, text, hashlib.sha256(raw).hexdigest(), kind)
    problems = semantic_problems(scenario)
    if problems:
        raise report(path, lines, problems)
    return scenario
