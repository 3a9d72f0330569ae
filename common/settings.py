"""The declaration of a setting: a config field that carries its own facts.

Every field of a config dataclass is declared with `setting(...)`, which records in the field's metadata
whether the field changes a result (`affects_result`) and, for a field the command line sets, its help text,
flag and choices. Whoever needs one of those facts reads it here instead of keeping a list of its own: reopening a
token store, resuming a run, grouping the seeds of a run and reusing a protocol's runs compare only the fields
that change a result (`result_values`), and `cli.py` builds an option's default and help from the field
(`setting_of`).

A field changes a result when two runs that differ only in it can produce different tokens, weights, metrics or
file contents. How fast or where a run runs (device, compilation, batching for speed, workers, progress bars,
logging) and where it writes do not.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any

__all__ = ["Setting", "setting", "config_dict", "is_declared", "affects_result", "result_values", "result_fields",
           "setting_of"]

_AFFECTS_RESULT = "affects_result"
_HELP = "help"
_FLAG = "flag"
_CHOICES = "choices"


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
