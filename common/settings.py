"""The declaration of a setting: a config field that carries its own facts.

Every field of a config dataclass is declared with `setting(...)`, which records in the field's metadata
whether the field changes a result (`affects_result`) and, for a field the command line sets, its help text,
flag and choices. Whoever needs one of those facts reads it here instead of keeping a list of its own: reopening a
token store, resuming a run, grouping the seeds of a run and reusing a protocol's runs compare only the fields
that change a result (`result_values`), and `cli.py` builds an option's default and help from the field
(`setting_of`).

The declared type is checked too: `check_fields`, the first step of every config's `__post_init__`, refuses a value
that is not of its field's type (a JSON string where a number belongs, "yes" for a flag, NaN or inf for any
float) and a seed that numpy, torch and scikit-learn do not all take (`Seed`: 0 to 2**32 - 1; a tuple of seeds
repeats none), in one line naming the field. `check_values` does the same for a config as recorded in a file.

A field changes a result when two runs that differ only in it can produce different tokens, weights, metrics or
file contents. How fast or where a run runs (device, compilation, batching for speed, workers, progress bars,
logging) and where it writes do not.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import os
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Annotated, Any

from common.errors import InputError

__all__ = ["Setting", "Seed", "setting", "config_dict", "is_declared", "affects_result", "result_values",
           "result_fields", "setting_of", "check_fields", "check_values"]

_AFFECTS_RESULT = "affects_result"
_HELP = "help"
_FLAG = "flag"
_CHOICES = "choices"
# The largest seed + 1 that numpy (`SeedSequence`, the legacy `RandomState`), torch (`manual_seed`) and
# scikit-learn (`random_state`) all take.
_SEED_LIMIT = 2**32


class _SeedMark:
    """The mark of `Seed` in an annotation."""


Seed = Annotated[int, _SeedMark]  # a seed field's type: a whole number from 0 to 2**32 - 1


def setting(default: Any = MISSING, *, factory: Callable[[], Any] = MISSING, help: str | None = None,
            affects_result: bool = True, flag: str | None = None, choices: tuple | None = None) -> Any:
    """A dataclass field with its facts: `x: int = setting(3, help="...", affects_result=False)`.

    Args:
        default: the field's default; left out (and no `factory`), the field is required.
        factory: builds the default (`dataclasses.field`'s `default_factory`), e.g. a nested config class.
        help: one or two sentences for the command line's `--help`; a field the command line sets needs one.
        affects_result: False for a field that cannot change a result (the module docstring says which).
        flag: the command line's option when it is not the field name with hyphens (`--strict` for
            `strict_media`).
        choices: the values the field accepts, shown and checked by the command line.

    Returns:
        `dataclasses.field(...)` carrying those facts in its metadata.
    """
    metadata = {_AFFECTS_RESULT: affects_result, _HELP: help, _FLAG: flag, _CHOICES: choices}
    return dataclasses.field(default=default, default_factory=factory, metadata=metadata)


def config_dict(config: Any) -> dict[str, Any]:
    """A config as JSON-able values (`dataclasses.asdict`, paths as strings), as outputs record it."""
    values = dataclasses.asdict(config)
    return {name: str(value) if isinstance(value, Path) else value for name, value in values.items()}


def is_declared(field: dataclasses.Field) -> bool:
    """Whether `field` was declared with `setting(...)`."""
    return _AFFECTS_RESULT in field.metadata


def _field(config_cls: type, name: str) -> dataclasses.Field:
    fields = {f.name: f for f in dataclasses.fields(config_cls)}
    if name not in fields:
        raise KeyError(f"{config_cls.__name__} has no field {name!r}")
    if not is_declared(fields[name]):
        raise TypeError(f"{config_cls.__name__}.{name} is not declared with common.settings.setting(...)")
    return fields[name]


def affects_result(config_cls: type, name: str) -> bool:
    """Whether the field `name` of `config_cls` can change a result.

    Raises:
        KeyError: `config_cls` has no such field.
        TypeError: the field is not declared with `setting`.
    """
    return _field(config_cls, name).metadata[_AFFECTS_RESULT]


@functools.cache
def _nested_configs(config_cls: type) -> dict[str, type]:
    """The fields of `config_cls` that hold a config dataclass of their own, by name."""
    hints = typing.get_type_hints(config_cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(config_cls) if dataclasses.is_dataclass(hints[f.name])}


def result_values(config_cls: type, values: Mapping[str, Any]) -> dict[str, Any]:
    """`values` (a config of `config_cls` as a dict, e.g. as a run or store recorded it) without the fields that
    cannot change a result, nested configs likewise.

    A key that is not a field of `config_cls` (written by another version) is kept: it is compared as it is.
    """
    known = {f.name for f in dataclasses.fields(config_cls)}
    nested = _nested_configs(config_cls)
    kept = {}
    for name, value in values.items():
        if name in known and not affects_result(config_cls, name):
            continue
        kept[name] = result_values(nested[name], value) if name in nested and isinstance(value, Mapping) else value
    return kept


def result_fields(config: Any) -> dict[str, Any]:
    """The fields of a config instance that change a result, as a dict for comparison (nested configs as dicts)."""
    return result_values(type(config), dataclasses.asdict(config))


@dataclass(frozen=True)
class Setting:
    """One declared field as a command line shows it.

    Attributes:
        name: the field name (and the command's parameter name).
        flag: the option, `--field-name` unless the declaration names another.
        value_type: the type of one value: int, float, str, bool or Path (an item's type for a sequence).
        sequence: the field holds a tuple of values (the command line takes them comma-separated).
        default: the field's default; `dataclasses.MISSING` for a required field.
        help: the declared help text (None when the field has none).
        choices: the declared choices (None: any value of `value_type`).
    """

    name: str
    flag: str
    value_type: type
    sequence: bool
    default: Any
    help: str | None
    choices: tuple | None

    @property
    def required(self) -> bool:
        return self.default is MISSING


def _value_type(annotation: Any) -> tuple[type, bool]:
    """(type of one value, whether a tuple of them) of an annotation such as `int`, `Path | None`, `tuple[str, ...]`."""
    if typing.get_origin(annotation) in (types.UnionType, typing.Union):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) is tuple:
        return typing.get_args(annotation)[0], True
    if annotation not in (int, float, str, bool, Path):
        raise TypeError(f"no command-line value type for {annotation!r}")
    return annotation, False


def setting_of(config_cls: type, name: str) -> Setting:
    """The field `name` of `config_cls` with the facts a command-line option is built from.

    Raises:
        KeyError: `config_cls` has no such field.
        TypeError: the field is not declared with `setting`, or its type is not one a command line takes.
    """
    field = _field(config_cls, name)
    value_type, sequence = _value_type(typing.get_type_hints(config_cls)[name])
    default = field.default_factory() if field.default_factory is not MISSING else field.default
    return Setting(name=name, flag=field.metadata[_FLAG] or "--" + name.replace("_", "-"), value_type=value_type,
                   sequence=sequence, default=default, help=field.metadata[_HELP], choices=field.metadata[_CHOICES])


# --- the declared types, checked --------------------------------------------------------------------------------


def _expected(hint: Any, value: Any) -> str | None:
    """What `value` should have been for the annotation `hint` (for a message), or None when it fits.

    Annotations that are not a config's plain types (int, float, str, bool, Path, dict, a config dataclass,
    `Seed`, optional ones, tuples of them) are not checked.
    """
    if typing.get_origin(hint) is Annotated:
        base, *marks = typing.get_args(hint)
        if _SeedMark in marks:
            fits = isinstance(value, numbers.Integral) and not isinstance(value, bool) and 0 <= value < _SEED_LIMIT
            return None if fits else "a whole number from 0 to 2**32 - 1 (a seed)"
        return _expected(base, value)
    if typing.get_origin(hint) in (types.UnionType, typing.Union):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        if value is None and len(options) < len(typing.get_args(hint)):
            return None
        problems = [_expected(option, value) for option in options]
        return None if None in problems else " or ".join(problems) + " (or null)"
    if typing.get_origin(hint) is tuple:
        items = typing.get_args(hint)
        if not isinstance(value, (tuple, list)):
            return "a list"
        if items[1:] != (Ellipsis,) and len(items) != len(value):
            return f"a list of {len(items)} values"
        item_hints = [items[0]] * len(value) if items[1:] == (Ellipsis,) else items
        for item_hint, item in zip(item_hints, value, strict=True):
            problem = _expected(item_hint, item)
            if problem is not None:
                return f"a list, each {problem}"
        if items[1:] == (Ellipsis,) and _SeedMark in typing.get_args(items[0])[1:] and len(set(value)) < len(value):
            repeated = sorted({seed for seed in value if list(value).count(seed) > 1})
            return f"distinct seeds (a repeated seed repeats a run; {repeated} given more than once)"
        return None
    checks = {
        bool: (lambda v: isinstance(v, (bool, _numpy_bool())), "true or false"),
        int: (lambda v: isinstance(v, numbers.Integral) and not isinstance(v, bool), "a whole number"),
        float: (lambda v: isinstance(v, numbers.Real) and not isinstance(v, bool) and math.isfinite(v),
                "a finite number"),
        str: (lambda v: isinstance(v, str), "text"),
        Path: (lambda v: isinstance(v, (str, os.PathLike)), "a path"),
        dict: (lambda v: isinstance(v, Mapping), "an object of settings"),
    }
    if hint in checks:
        fits, expected = checks[hint]
        return None if fits(value) else expected
    if dataclasses.is_dataclass(hint):
        return None if isinstance(value, hint) else f"a {hint.__name__}"
    return None


@functools.cache
def _numpy_bool() -> type:
    import numpy  # numpy's bool (what an array's element is) is a bool too; imported once, when a flag is checked

    return numpy.bool_


@functools.cache
def _hints(config_cls: type) -> dict[str, Any]:
    return typing.get_type_hints(config_cls, include_extras=True)


def check_fields(config: Any) -> None:
    """Refuse a config whose field holds a value that is not of the field's declared type (the module docstring).

    Called first in every config's `__post_init__`, so that the checks after it compare numbers with numbers.

    Raises:
        InputError: naming the first such field (in backticks), what it must be and what it holds.
    """
    hints = _hints(type(config))
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        expected = _expected(hints[field.name], value)
        if expected is not None:
            raise InputError(f"`{field.name}` must be {expected}, got {value!r}")


def check_values(config_cls: type, values: Mapping[str, Any], source: str) -> None:
    """Refuse a recorded config (a JSON object read from `source`) whose value is not of its field's type.

    Keys that are not fields are left to the config's own reader; a nested config may be an object of its fields.

    Raises:
        InputError: "`source`: field 'name' must be ..., got ..." for the first such value.
    """
    hints = _hints(config_cls)
    for name, value in values.items():
        if name not in hints:
            continue
        if dataclasses.is_dataclass(hints[name]) and isinstance(value, Mapping):
            check_values(hints[name], value, source)
            continue
        expected = _expected(hints[name], value)
        if expected is not None:
            raise InputError(f"{source}: field {name!r} must be {expected}, got {value!r}")
