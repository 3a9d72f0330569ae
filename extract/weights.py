"""Backbone checkpoint files: safe reading, hashing for provenance, and strict loading with a clear error.

Checkpoints are read without running code: safetensors, or `torch.load(..., weights_only=True)`. A folder is
read as a Hugging Face model folder (`model.safetensors` or `pytorch_model.bin`). Nested checkpoints that wrap
the state dict under one of `_WRAPPER_KEYS` (DeiT's and many training scripts' `{"model": ...}`) are unwrapped.
"""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from common.errors import InputError
from common.files import sha256_file

__all__ = ["HF_FILES", "read_state_dict", "read_torch_file", "sha256_file", "load_strict", "weights_file",
           "load_failure"]

HF_FILES = ("model.safetensors", "pytorch_model.bin")
_WRAPPER_KEYS = ("model", "state_dict", "model_state")


def weights_file(path: Path) -> Path:
    """The file that holds the tensors: `path` itself, or the weights file inside a Hugging Face model folder.

    Raises:
        FileNotFoundError: nothing at `path`, or a folder without a weights file.
    """
    path = Path(path)
    if path.is_dir():
        for name in HF_FILES:
            if (path / name).is_file():
                return path / name
        raise FileNotFoundError(f"{path}: folder without {' or '.join(HF_FILES)}")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: weights file not found")
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a checkpoint file or Hugging Face folder, on the CPU.

    Raises:
        FileNotFoundError: see `weights_file`.
        ValueError: the file holds something other than a (possibly wrapped) state dict.
    """
    file = weights_file(path)
    if file.suffix == ".safetensors":
        try:
            return load_file(str(file), device="cpu")
        except Exception as error:  # noqa: BLE001 - safetensors' errors have no common base; all mean the same
            raise InputError(f"{file}: not a readable safetensors file ({load_failure(error)})") from error
    state = read_torch_file(file)
    if isinstance(state, dict):
        for key in _WRAPPER_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"{file}: not a state dict (name -> tensor)")
    return state


def read_torch_file(file: Path):
    """What `torch.load(file, weights_only=True)` gives, on the CPU: no code from the file runs.

    Raises:
        InputError: one line naming the file, for any file torch cannot read that way (corrupt, not a checkpoint,
            or one that needs code to load).
    """
    try:
        return torch.load(file, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - any unpickling failure means the same thing here
        raise InputError(f"{file}: not a PyTorch checkpoint readable without running code "
                         f"({load_failure(error)})") from error


def load_failure(error: Exception) -> str:
    """Why `torch.load(..., weights_only=True)` refused a file, in one line.

    Torch's own message spans several lines, asks to file an issue and suggests `weights_only=False`, which
    would run the file's code: the user gets the gist (the unpickler's reason, or the first line) instead.
    """
    text = str(error)
    if "WeightsUnpickler error:" in text:  # a pickle with other objects than tensors, or no pickle at all
        text = text.split("WeightsUnpickler error:", 1)[1].strip().split("\n\n", 1)[0]
    gist = " ".join(text.split()) if "\n" not in text.strip() else text.strip().splitlines()[0]
    return f"{type(error).__name__}: {gist[:200]}"


def load_strict(model: nn.Module, state: dict[str, torch.Tensor], source: Path) -> None:
    """`load_state_dict(strict=True)`, after a check that names missing, unexpected and mis-shaped keys.

    Raises:
        ValueError: the state dict does not fit the model exactly.
    """
    own = model.state_dict()
    missing, unexpected = sorted(set(own) - set(state)), sorted(set(state) - set(own))
    wrong = sorted(f"{k} {tuple(state[k].shape)} (model: {tuple(own[k].shape)})"
                   for k in own.keys() & state.keys() if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise InputError(f"{source}: weights do not fit the {type(model).__name__} of this config: "
                         f"{len(missing)} missing {missing[:4]}, {len(unexpected)} unexpected {unexpected[:4]}, "
                         f"{len(wrong)} of another shape {wrong[:4]}")
    model.load_state_dict(state, strict=True)
