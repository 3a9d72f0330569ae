"""The declaration of a setting: every config field says whether it changes a result, read in one place."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import inspect
import re
import textwrap
import tomllib
import typing
from dataclasses import MISSING, dataclass
from pathlib import Path

import pytest

from common.errors import InputError
from common.settings import (
    Seed,
    affects_result,
    check_fields,
    check_values,
    is_declared,
    result_fields,
    result_values,
    setting,
    setting_of,
)

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


def test_every_config_checks_its_fields_types_in_post_init():
    def checks(cls) -> bool:  # directly, or through the base class's `__post_init__` it calls first
        source = ast.parse(textwrap.dedent(inspect.getsource(cls.__post_init__)))
        calls = [node.func for node in ast.walk(source) if isinstance(node, ast.Call)]
        if any(getattr(func, "id", None) == "check_fields" for func in calls):
            return True
        calls_super = any(isinstance(func, ast.Attribute) and func.attr == "__post_init__" for func in calls)
        return calls_super and checks(cls.__mro__[1])

    assert sorted(cls.__name__ for cls in _config_classes() if not checks(cls)) == []


def test_every_seed_field_is_declared_a_seed():
    hints = {(cls.__name__, name): hint for cls in _config_classes()
             for name, hint in typing.get_type_hints(cls, include_extras=True).items()
             if "seed" in name and name != "group_seeds"}
    assert len(hints) >= 10 and all(hint in (Seed, tuple[Seed, ...]) for hint in hints.values()), hints


@dataclass(frozen=True)
class _Typed:
    count: int = setting(1)
    share: float = setting(0.5)
    flag: bool = setting(False)
    name: str = setting("x")
    where: Path | None = setting(None)
    betas: tuple[float, ...] = setting((0.0,))
    seed: Seed = setting(0)
    seeds: tuple[Seed, ...] = setting((0, 1))

    def __post_init__(self) -> None:
        check_fields(self)


@pytest.mark.parametrize("field, value, expected", [
    ("count", "3", "a whole number"), ("count", True, "a whole number"), ("share", float("nan"), "a finite number"),
    ("share", "0.5", "a finite number"), ("flag", "yes", "true or false"), ("name", 3, "text"),
    ("where", 3, "a path (or null)"), ("betas", (0.1, float("inf")), "a list, each a finite number"),
    ("seed", -1, "a whole number from 0 to 2**32 - 1"), ("seed", 2**64, "a whole number from 0 to 2**32 - 1"),
    ("seed", 1.5, "a whole number from 0 to 2**32 - 1"), ("seeds", (0, 1, 0), "distinct seeds"),
    ("seeds", (0, -1), "a list, each a whole number from 0 to 2**32 - 1"),
])
def test_a_value_that_is_not_of_its_fields_type_is_refused_naming_the_field(field, value, expected):
    with pytest.raises(InputError, match=re.escape(f"`{field}` must be {expected}")):
        _Typed(**{field: value})
    with pytest.raises(InputError, match=re.escape(f"run/config.json: field {field!r} must be {expected}")):
        check_values(_Typed, {field: list(value) if isinstance(value, tuple) else value}, "run/config.json")


def test_values_of_their_type_pass_ints_as_floats_and_strings_as_paths():
    _Typed(count=3, share=1, flag=True, name="", where="a/b", betas=[0, 0.5], seed=2**32 - 1, seeds=(5,))
    check_values(_Typed, {"share": 2, "where": None, "seeds": [0, 1], "unknown": "left to the reader"}, "file")
