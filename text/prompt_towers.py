"""CLIP and CLAP text towers for class vectors, with ClipClap-GZSL's prompt templates and ensembling.

A class name becomes one vector as ClipClap-GZSL's `clip_embeddings_extraction/get_clip_embeddings_*.py` makes
it: every template is filled with the name, each prompt is embedded by the text tower (its projection) and
L2-normalised, the prompt vectors are averaged and the mean is L2-normalised again (their CLIP code normalises
each prompt explicitly; their WavCaps text encoder returns normalised vectors, so the CLAP side is the same
rule). The `clipclap` source is the two concatenated, CLIP first, as their `src/dataset.py` joins them
(`use_wavcaps_embeddings`): a 512 + 512-d vector of norm sqrt(2) with transformers' CLAP (theirs was 512 + 1024
with WavCaps' text tower, which no maintained library loads).

Templates (`TEMPLATES`) are ClipClap-GZSL's, verbatim, grammar included ("a example of"), since any change moves
the vectors: "person" is their UCF101 and ActivityNet set (48 CLIP prompts, 30 CLAP prompts), "vggsound" their
VGGSound set (8 and 9).

Towers are transformers' `CLIPTextModelWithProjection` / `ClapTextModelWithProjection` built from the folder's
config.json and loaded strictly (`extract.clip_clap.tower_state`) from a local model folder that also holds the
tokenizer: a `save_pretrained` folder or a `huggingface-cli download openai/clip-vit-base-patch32` /
`laion/clap-htsat-unfused` snapshot. Towers are loaded once per process (per folder) and prompt vectors are
cached per process (per prompt), as the sentence encoder does.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import AutoConfig, AutoTokenizer, ClapTextModelWithProjection, CLIPTextModelWithProjection

from common.errors import InputError
from common.files import sha256_file
from extract import weights as weight_files
from extract.clip_clap import frozen_tower, tower_state
from text.class_embeddings import EmbeddingSource, EmbeddingSpec
from text.class_names import class_name_sentence

__all__ = ["TOWER_KINDS", "TEMPLATES", "TextTower", "text_tower", "PromptSource"]

logger = logging.getLogger(__name__)

TOWER_KINDS = ("clip", "clap")
_BATCH = 128  # prompts per forward pass

_CLIP_PERSON = tuple(f"{frame} {who} {verb}{{}}." for verb in ("", "using ", "doing ", "during ", "performing ",
                                                              "practicing ")
                     for who in ("a person", "the person")
                     for frame in ("a photo of", "a video of", "a example of", "a demonstration of"))
_CLAP_PERSON = (
    "a person {} can be heard.", "a example of a person {} can be heard.",
    "a demonstration of a person {} can be heard.", "the person {} can be heard.",
    "a example of the person {} can be heard.", "a demonstration of the person {} can be heard.",
    *(prompt for verb in ("using", "doing", "during", "performing", "practicing")
      for prompt in ((() if verb == "during" else (f"a person {verb} {{}} can be heard.",)) + (
          f"a example of a person {verb} {{}} can be heard.", f"a demonstration of a person {verb} {{}} can be heard.",
          f"a example of the person {verb} {{}} can be heard.",
          f"a demonstration of the person {verb} {{}} can be heard."))),
)
TEMPLATES: dict[str, dict[str, tuple[str, ...]]] = {
    "person": {"clip": _CLIP_PERSON, "clap": _CLAP_PERSON},
    "vggsound": {
        "clip": ("a photo of {}.", "a video of {}.", "a example of {}.", "a demonstration of {}.",
                 "a photo of the person {}.", "a video of the {}.", "a example of the {}.",
                 "a demonstration of the {}."),
        "clap": ("a {} can be heard.", "a example of a {} can be heard.", "a demonstration of a {} can be heard.",
                 "the {} can be heard.", "a example of the {} can be heard.", "a demonstration of the {} can be heard.",
                 "{} can be heard.", "a example of {} can be heard.", "a demonstration of {} can be heard."),
    },
}
_MODELS = {"clip": CLIPTextModelWithProjection, "clap": ClapTextModelWithProjection}
# The other tower's keys in a full CLIPModel / ClapModel file, dropped by name.
_OTHER_TOWER = {"clip": ("vision_model.", "visual_projection.", "logit_scale"),
                "clap": ("audio_model.", "audio_projection.", "logit_scale")}


class TextTower:
    """One CLIP or CLAP text tower with its tokenizer; `ensemble` gives ClipClap's vector of a name.

    Attributes:
        kind: "clip" or "clap".
        folder: the model folder.
        dim: projection width.
    """

    def __init__(self, kind: str, folder: Path) -> None:
        if kind not in TOWER_KINDS:
            raise InputError(f"text tower must be one of {TOWER_KINDS}, got {kind!r}")
        if not folder.is_dir():
            raise FileNotFoundError(f"{folder}: not a model folder (the {kind} text tower needs its config.json and "
                                    "tokenizer beside the weights: a save_pretrained or huggingface-cli download "
                                    "folder)")
        self.kind, self.folder = kind, folder
        state = tower_state(folder, ("text_model.", "text_projection."), _OTHER_TOWER[kind], f"{kind.upper()} text")
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if not config.model_type.startswith(kind):
            raise InputError(f"{folder}: config.json describes a {config.model_type!r} model, not a {kind} one")
        text_config = getattr(config, "text_config", config)
        if hasattr(config, "text_config"):  # a full CLIPModel / ClapModel: the projection width is the model's
            text_config.projection_dim = config.projection_dim
        model = _MODELS[kind](text_config)
        self._model = frozen_tower(model, state, folder)
        self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
        # CLIP's position table holds all its tokens; RoBERTa's (CLAP) starts after the padding index
        self._max_tokens = text_config.max_position_embeddings - (2 if kind == "clap" else 0)
        self.dim = int(text_config.projection_dim)
        self._sha256 = sha256_file(weight_files.weights_file(folder))
        self._cache: dict[str, np.ndarray] = {}
        logger.info("%s text tower %s (%d-d)", kind, folder, self.dim)

    def encode(self, prompts: Sequence[str]) -> np.ndarray:
        """Unit-norm projections of prompts (cached per prompt).

        Shapes: N prompts -> (N, D) float32.
        """
        fresh = sorted({prompt for prompt in prompts if prompt not in self._cache})
        for start in range(0, len(fresh), _BATCH):
            batch = fresh[start:start + _BATCH]
            tokens = self._tokenizer(batch, padding=True, truncation=True, max_length=self._max_tokens,
                                     return_tensors="pt")
            with torch.inference_mode():
                embeds = self._model(input_ids=tokens["input_ids"], attention_mask=tokens["attention_mask"]).text_embeds
            self._cache.update(zip(batch, F.normalize(embeds.float(), dim=-1).numpy(), strict=True))
        return np.stack([self._cache[prompt] for prompt in prompts]).astype(np.float32)

    def ensemble(self, names: Sequence[str], templates: Sequence[str]) -> np.ndarray:
        """ClipClap's class vectors: the normalised mean of the unit prompt vectors of every template.

        Shapes: C names -> (C, D) float64, unit norm.
        """
        prompts = [template.format(name) for name in names for template in templates]
        vectors = self.encode(prompts).astype(np.float64).reshape(len(names), len(templates), self.dim).mean(axis=1)
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def provenance(self) -> dict:
        return {"model": f"transformers {_MODELS[self.kind].__name__}", "path": str(self.folder.resolve()),
                "sha256": self._sha256}


@functools.lru_cache(maxsize=4)
def text_tower(kind: str, folder: str) -> TextTower:
    """The text tower of a model folder, loaded once per process."""
    return TextTower(kind, Path(folder).expanduser())


class PromptSource(EmbeddingSource):
    """CLIP / CLAP text towers over ClipClap's prompt templates (`text.prompt_towers`), concatenated for clipclap."""

    def __init__(self, config: EmbeddingSpec, towers: list[TextTower], templates: str):
        super().__init__(config, sum(tower.dim for tower in towers), config.normalise)
        self._towers = towers
        self._templates = templates

    def sentence(self, name: str) -> str:
        return class_name_sentence(self.mapped_name(name))

    def _vectors(self, names: Sequence[str]) -> np.ndarray:
        sentences = [self.sentence(name) for name in names]
        return np.concatenate([tower.ensemble(sentences, TEMPLATES[self._templates][tower.kind])
                               for tower in self._towers], axis=1)  # (C, D_clip [+ D_clap])

    def _compose(self, name: str) -> tuple[np.ndarray | None, list[str]]:
        return self._vectors([name])[0], []

    def embed(self, names: Sequence[str]) -> np.ndarray:
        if names:
            self._vectors(names)  # one batched pass per tower fills its prompt cache
        return super().embed(names)

    def _source_record(self) -> dict:
        return {"towers": [tower.provenance() for tower in self._towers], "templates": self._templates}

    def _composition(self) -> str:
        joined = " then ".join(tower.kind.upper() for tower in self._towers)
        return (f"ClipClap-GZSL's {self._templates!r} prompt ensemble: mean of the unit prompt vectors, renormalised, "
                f"per tower ({joined}" + (", concatenated)" if len(self._towers) > 1 else ")"))
