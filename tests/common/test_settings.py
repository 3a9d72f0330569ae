"""The declaration of a setting: every config field says whether it changes a result, read in one place."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import tomllib
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path

import pytest

from common.settings import affects_result, is_declared, result_fields, result_values, setting, setting_of

ROOT = Path(__file__).resolve().parents[2]
ROOMS = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["setuptools"]["packages"]


def _config_classes() -> set[type]:
    """Every config dataclass of the rooms: the dataclasses of each `config` module and every dataclass named
    `...Config` elsewhere, with the config dataclasses nested in their fields."""
    found: set[type] = set()
    for room in ROOMS:
        for path in sorted((ROOT / room).rglob("*.py")):
            module_name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            names = [node.name for node in ast.parse(path.read_text(encoding="utf-8")).body
                     if isinstance(node, ast.ClassDef) and (path.stem == "config" or node.name.endswith("Config"))]
            if names:
                module = importlib.import_module(module_name)
                found |= {getattr(module, name) for name in names if dataclasses.is_dataclass(getattr(module, name))}
    pending = list(found)
    while pending:
        hints = typing.get_type_hints(pending.pop())
        for nested in (hint for hint in hints.values() if dataclasses.is_dataclass(hint) and hint not in found):
            found.add(nested)
            pending.append(nested)
    return found


def _undeclared(classes) -> list[str]:
    return sorted(f"{cls.__module__}.{cls.__name__}.{f.name}" for cls in classes for f in dataclasses.fields(cls)
                  if not is_declared(f))


def test_every_config_field_declares_whether_it_changes_a_result():
    classes = _config_classes()
    names = {cls.__name__ for cls in classes}
    # the walk finds the stages' configs, the nested ones and those outside a config module
    assert {"ExtractConfig", "VideoConfig", "TokenConfig", "RunnerConfig", "StoreConfig", "TrainConfig",
            "FusionConfig", "ZeroShotConfig", "PlotConfig", "SyntheticConfig", "FilmstripLayout", "DemoConfig"} <= names
    assert _undeclared(classes) == []


def test_a_field_without_a_declaration_is_found():
    @dataclass(frozen=True)
    class Half:
        declared: int = setting(1)
        plain: int = 2

    assert _undeclared([Half]) == [f"{__name__}.Half.plain"]
    with pytest.raises(TypeError, match="Half.plain is not declared"):
        affects_result(Half, "plain")
    with pytest.raises(KeyError, match="no field 'other'"):
        affects_result(Half, "other")


@dataclass(frozen=True)
class _Inner:
    size: int = setting(3, help="How big.")
    threads: int = setting(4, affects_result=False)


@dataclass(frozen=True)
class _Outer:
    data: Path = setting(help="Input `size` file.")
    out: Path | None = setting(None, affects_result=False, flag="--to")
    seeds: tuple[int, ...] = setting((0, 1), help="Seeds.")
    mode: str = setting("a", choices=("a", "b"), help="Mode.")
    inner: _Inner = setting(factory=_Inner)


def test_results_compare_only_the_fields_that_change_them():
    config = _Outer(data=Path("x"), out=Path("y"))
    assert result_fields(config) == {"data": Path("x"), "seeds": (0, 1), "mode": "a", "inner": {"size": 3}}
    same = dataclasses.replace(config, out=Path("elsewhere"), inner=_Inner(threads=1))
    assert result_fields(same) == result_fields(config)
    assert result_fields(dataclasses.replace(config, inner=_Inner(size=4))) != result_fields(config)
    # a recorded dict: a key of another version is kept and compared
    recorded = {"data": "x", "out": "y", "inner": {"size": 3, "threads": 8}, "retired": 1}
    assert result_values(_Outer, recorded) == {"data": "x", "inner": {"size": 3}, "retired": 1}


def test_a_setting_tells_the_command_line_what_it_needs():
    data, out, seeds, mode = (setting_of(_Outer, name) for name in ("data", "out", "seeds", "mode"))
    assert (data.flag, data.value_type, data.sequence, data.required, data.help) == (
        "--data", Path, False, True, "Input `size` file.")
    assert data.default is MISSING
    assert (out.flag, out.value_type, out.default, out.required, out.help) == ("--to", Path, None, False, None)
    assert (seeds.value_type, seeds.sequence, seeds.default) == (int, True, (0, 1))
    assert mode.choices == ("a", "b") and mode.default == "a"
    with pytest.raises(TypeError, match="no command-line value type"):
        setting_of(_Outer, "inner")
