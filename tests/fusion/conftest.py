"""Fixtures of the fusion tests: a tiny word-vector file and learnable synthetic token stores.

The tokens of a clip are fixed random linear maps of its class-name embedding plus noise, so a head that
learns tokens -> embedding on seen classes can recognise unseen ones (the zero-shot assumption, by
construction). The word vectors are random too and cover the Kinetics-400 labels, so the phi(s_v) term of
the SE target works without the real GloVe vectors.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from extract.outputs import TokenLayout
from features.manifest import ManifestRow
from features.store import TokenStore
from text.class_names import tokenize_class_name

SEEN = ["playing guitar", "playing drums", "dog barking", "riding bike", "swimming pool", "cooking pasta",
        "ballet dancing", "opera singing", "chopping wood", "car engine"]
UNSEEN = ["playing piano", "cat meowing", "riding horse", "folk dancing"]
LAYOUT = {"V": 2, "Nv": 5, "Dv": 24, "Na": 4, "Da": 16, "kinetics_classes": 400}
WORD_DIM = 16


@pytest.fixture(scope="session")
def vectors_file(write_word_vectors) -> Path:
    """A word2vec text file with random vectors for the class-name words and the Kinetics-400 words."""
    return write_word_vectors(SEEN + UNSEEN, WORD_DIM, seed=7, extra_words=("unused",))


def _phi(name: str, vectors: dict[str, np.ndarray]) -> np.ndarray:
    return np.mean([vectors[w] for w in tokenize_class_name(name)], axis=0)


def _read_vectors(path: Path) -> dict[str, np.ndarray]:
    rows = path.read_text(encoding="utf-8").splitlines()[1:]
    return {r.split()[0]: np.array(r.split()[1:], dtype=np.float32) for r in rows}


def make_store(
    path: Path,
    vectors_file: Path,
    clips_per_class: int = 6,
    seen: list[str] = SEEN,
    unseen: list[str] = UNSEEN,
    layout: dict | None = None,
    no_audio_every: int = 5,
    noise: float = 0.3,
    seed: int = 0,
    extra_splits: dict[str, list[str]] | None = None,
    pending: int = 0,
) -> TokenStore:
    """A done store whose tokens are linear maps of the clip's class embedding (+ noise).

    `extra_splits` adds clips of other splits: split name -> class names. `pending`: the last this many clips
    are left unwritten, as in a store that extract is still filling.
    """
    layout = dict(LAYOUT if layout is None else layout)
    vectors = _read_vectors(vectors_file)
    rng = np.random.default_rng(seed)
    video_map = rng.normal(size=(layout["Nv"], layout["Dv"], WORD_DIM)) / np.sqrt(WORD_DIM)
    audio_map = rng.normal(size=(layout["Na"], layout["Da"], WORD_DIM)) / np.sqrt(WORD_DIM)
    # The video backbone "predicts" one Kinetics class per class (a peak on noise), as a real one tends to.
    kinetics_of = {name: (17 * k + 3) % layout["kinetics_classes"] for k, name in enumerate(sorted(
        set(seen) | set(unseen) | {n for names in (extra_splits or {}).values() for n in names}))}
    plan = [(name, "seen") for name in seen] + [(name, "unseen") for name in unseen]
    for split, names in (extra_splits or {}).items():
        plan += [(name, split) for name in names]
    clips, tokens = [], []
    for name, split in plan:
        phi = _phi(name, vectors)
        for k in range(clips_per_class):
            i = len(clips)
            clips.append(ManifestRow(f"{split}/{name}/{k}", Path(f"/data/{i}.mp4"), name, split))
            has_audio = no_audio_every == 0 or i % no_audio_every != 0
            video = np.einsum("ndw,w->nd", video_map, phi)[None] + noise * rng.normal(
                size=(layout["V"], layout["Nv"], layout["Dv"]))
            audio = np.einsum("ndw,w->nd", audio_map, phi) + noise * rng.normal(size=(layout["Na"], layout["Da"]))
            if not has_audio:
                audio = np.zeros_like(audio)
            kinetics = rng.normal(size=(layout["V"], layout["kinetics_classes"]))
            kinetics[:, kinetics_of[name]] += 6.0
            tokens.append(SimpleNamespace(
                video_tokens=video.astype(np.float16), audio_tokens=audio.astype(np.float16),
                kinetics_logits=kinetics.astype(np.float32),
                has_audio=has_audio, audio_frames=100 if has_audio else 0))
    store = TokenStore.create(path, clips, TokenLayout.from_dict(layout), {"profile": "test"},
                              {"weights": "random-init"})
    for start, stop in store.block_ranges():
        stop = min(stop, len(clips) - pending)
        if start < stop:
            store.write_clips(list(range(start, stop)), tokens[start:stop])
    return TokenStore.open(path)


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The helpers and constants above, for test modules (importlib import mode: conftest is not importable)."""
    return SimpleNamespace(SEEN=list(SEEN), UNSEEN=list(UNSEEN), LAYOUT=dict(LAYOUT), make_store=make_store)


@pytest.fixture(scope="session")
def synthetic_store(tmp_path_factory, vectors_file) -> TokenStore:
    return make_store(tmp_path_factory.mktemp("stores") / "synthetic.zarr", vectors_file)


@pytest.fixture
def crash_in_epoch(monkeypatch):
    """`crash_in_epoch(epoch)`: checkpoints of that epoch raise "power cut" (after the epoch's log line, before its
    checkpoints: the worst moment for a resume); `crash_in_epoch(None)` writes them again."""
    from fusion import run_dir

    save = run_dir.save_checkpoint

    def set_crash(epoch: int | None) -> None:
        def crash(path, payload):
            if payload["epoch"] == epoch:
                raise RuntimeError("power cut")
            save(path, payload)

        monkeypatch.setattr(run_dir, "save_checkpoint", save if epoch is None else crash)

    return set_crash
