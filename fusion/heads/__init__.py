"""The comparison heads (the AVCA-GZSL family) by name, as timm registers models.

Each method's module registers its builder with `@register_head("name", config=..., recipes=...)` beside the
model, so `grep register_head` lists them. `create_head(name, values, dims, extracted)` builds one from its config
values; `resolve_head_settings` applies a method's recipe per dataset (`RECIPES` of its module) under the
user's overrides; `list_heads()` names them all. MZST itself is not a comparison head: it is `fusion.model`
("mzst", the trainer's default).
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import torch

from common.errors import InputError
from fusion.heads.head import ComparisonHead, HeadLosses, config_values
from fusion.model import ModelDims

__all__ = ["HeadEntry", "ComparisonHead", "HeadLosses", "register_head", "list_heads", "head_entry", "create_head",
           "head_config", "head_from_record", "resolve_head_settings", "takes_peer_beta_rule"]


@dataclass(frozen=True)
class HeadEntry:
    """A registered method: its builder, its config dataclass and its recipes per dataset.

    A recipe maps a dataset name ("ucf", "activitynet", "vggsound") to values of `fusion.config.TrainConfig`
    fields (epochs, lr, batch_size, weight_decay, grad_clip_norm) and of the method's config fields.
    `peer_weights(state_dict) -> (values, our state_dict)` reads a state_dict of the peers' own model of the method
    (AVCA-GZSL's parameter names): the method's config values its tensor shapes fix, with the data's sizes under
    "dims" (`video_dim`, `audio_dim`, `embedding_dim`); None where the method has no such reader.
    """

    name: str
    build: Callable[[Any, ModelDims, bool], ComparisonHead]
    config_class: type
    recipes: Mapping[str, Mapping[str, Any]]
    # Reads a checkpoint of the peers' own code (`fusion.peer_checkpoint`): their state_dict -> (the method's config
    # values inferred from the shapes, with the data's sizes under "dims"; the head's state_dict). None: not offered.
    peer_weights: Callable[[Mapping[str, torch.Tensor]], tuple[dict, dict[str, torch.Tensor]]] | None = None


_REGISTRY: dict[str, HeadEntry] = {}
# The modules whose methods register themselves when imported; imported on the first lookup, so that evaluation
# (`fusion.predict`) can import the interface without the methods' training code, which imports evaluation.
_METHOD_MODULES = ("fusion.heads.ranking", "fusion.heads.cjme", "fusion.heads.avgzslnet", "fusion.heads.avca",
                  "fusion.heads.tcaf", "fusion.heads.clipclap")


def _import_methods() -> None:
    for module in _METHOD_MODULES:
        importlib.import_module(module)


def register_head(name: str, *, config: type, recipes: Mapping[str, Mapping[str, Any]],
                  peer_weights: Callable[[Mapping[str, torch.Tensor]], tuple[dict, dict[str, torch.Tensor]]]
                  | None = None):
    """Register a builder `build(config, dims, extracted) -> ComparisonHead` under `name`, and optionally the
    reader of the peers' checkpoints of the method (`HeadEntry.peer_weights`)."""

    def register(build: Callable[[Any, ModelDims, bool], ComparisonHead]):
        if name in _REGISTRY:
            raise ValueError(f"head {name!r} is registered twice")
        _REGISTRY[name] = HeadEntry(name=name, build=build, config_class=config, recipes=recipes,
                                    peer_weights=peer_weights)
        return build

    return register


def list_heads() -> list[str]:
    """The registered methods, sorted."""
    _import_methods()
    return sorted(_REGISTRY)


def head_entry(name: str) -> HeadEntry:
    """The registered method `name`.

    Raises:
        InputError: no such method.
    """
    _import_methods()
    if name not in _REGISTRY:
        raise InputError(f"unknown method {name!r}; choose mzst or one of {list_heads()}")
    return _REGISTRY[name]


def head_config(name: str, values: Mapping[str, Any]) -> Any:
    """The method's config from field values (JSON lists become tuples); fields left out keep their defaults.

    Raises:
        InputError: a field the method does not have, or a value its config refuses.
    """
    config_class = head_entry(name).config_class
    known = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"method {name!r} has no setting(s) {unknown}; its settings are {sorted(known)}")
    return config_class(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def create_head(name: str, values: Mapping[str, Any], dims: ModelDims, extracted: bool) -> ComparisonHead:
    """A randomly initialised head of method `name` (seed torch first).

    Args:
        name: a registered method.
        values: its config fields (`head_config`).
        dims: the sizes the data fixes.
        extracted: the store holds extracted tokens (True) or imported time segments (`fusion.heads.inputs`).
    """
    return head_entry(name).build(head_config(name, values), dims, extracted)


def takes_peer_beta_rule(name: str) -> bool:
    """Whether method `name` scores audio, video and both, as the peers' beta rule needs (`beta_modes`; MZST, not a
    registered head, does not). A head of size 1 is built to read it, as the modes are the built head's."""
    if name == "mzst":
        return False
    return bool(create_head(name, {}, ModelDims(1, 1, 1, 1, 1, 1), extracted=False).beta_modes)


def head_from_record(record: Mapping[str, Any], dims: ModelDims) -> ComparisonHead:
    """The head a checkpoint's `head` record (`ComparisonHead.record`) describes, untrained."""
    return create_head(record["method"], record["config"], dims, bool(record["extracted"]))


def resolve_head_settings(name: str, recipe: str | None, train_fields: set[str],
                          overrides: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The training-config values and the method's config values of a run: the recipe, then `overrides`.

    Args:
        name: a registered method.
        recipe: a dataset's recipe ("ucf", "activitynet", "vggsound"), or None: the method's defaults.
        train_fields: the field names of `fusion.config.TrainConfig` (the recipe's values for them go there).
        overrides: the method's config fields as given by the user (they win over the recipe).

    Returns:
        (TrainConfig values: the recipe's, or the peers' shared training `PEER_TRAINING` without a recipe; the
        method's complete config values).

    Raises:
        InputError: an unknown method or recipe, or a setting the method does not have.
    """
    entry = head_entry(name)
    if recipe is not None and recipe not in entry.recipes:
        raise InputError(f"method {name!r} has no recipe {recipe!r}; choose from {sorted(entry.recipes)}")
    from fusion.heads.training import PEER_TRAINING

    table = dict(entry.recipes[recipe]) if recipe is not None else dict(PEER_TRAINING)
    train = {k: v for k, v in table.items() if k in train_fields}
    head_values = {k: v for k, v in table.items() if k not in train_fields}
    return train, config_values(head_config(name, {**head_values, **overrides}))

