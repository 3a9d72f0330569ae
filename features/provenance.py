"""What a store records of how it was made: package versions, the code's version, the time (`features.store`)."""

from __future__ import annotations

import datetime
import importlib.metadata
import subprocess
from pathlib import Path

__all__ = ["package_versions", "code_version", "now_utc"]


def package_versions() -> dict[str, str]:
    """Versions of the packages that shape the tokens (recorded in every store's provenance)."""
    versions = {}
    for name in ("torch", "torchvision", "torchaudio", "timm", "av", "zarr", "numpy"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def code_version() -> str:
    """`git describe` of this checkout ("unknown" outside git), recorded in provenance."""
    try:
        result = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=12"], cwd=Path(__file__).parent,
                                capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() or "unknown"


def now_utc() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
