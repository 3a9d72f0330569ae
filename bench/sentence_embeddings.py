"""Sentence-encoder class embeddings (`minilm`) against the default GloVe source: names per second, start-up.

1. names/s: `embed` of the 1,310 names of Kinetics-700, VGGSound, ActivityNet and UCF-101, minilm (the encoder's
   per-process cache emptied before each repetition) and glove-6b-50d, in this process;
2. start-up: a fresh Python process that imports the library, loads the packaged model and encodes one name,
   with our loader (`text.sentence_encoder`, plain transformers) and with sentence-transformers'
   `SentenceTransformer(folder)`: the measurement behind choosing transformers.

    python bench/sentence_embeddings.py [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from embedding_load import best_of  # noqa: E402  (bench/ is on sys.path: the script's folder)

from curate import classlists  # noqa: E402
from text import class_embeddings, sentence_encoder  # noqa: E402

_OURS = ("from text.class_embeddings import load_embedding_source; "
         "load_embedding_source('minilm').embed(['playing guitar'])")
_SENTENCE_TRANSFORMERS = ("from sentence_transformers import SentenceTransformer; "
                          "from text.sentence_encoder import minilm_folder; "
                          "SentenceTransformer(str(minilm_folder()), device='cpu').encode(['playing guitar'])")


def _fresh_process(code: str) -> None:
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, capture_output=True,
                   env={**os.environ, "HF_HUB_OFFLINE": "1"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2, help="timed repetitions (the best is reported)")
    args = parser.parse_args()
    names = [name for listed in ("kinetics700", "vggsound", "activitynet200", "ucf101")
             for name in classlists.load_classlist(listed)]
    minilm, glove = class_embeddings.load_embedding_source("minilm"), class_embeddings.load_embedding_source()
    encoder = sentence_encoder.sentence_encoder(str(sentence_encoder.minilm_folder()))

    def minilm_uncached():
        encoder._cache.clear()  # measure the model, not the cache
        minilm.embed(names)

    minilm_s = best_of(args.repeats, minilm_uncached)
    glove_s = best_of(args.repeats, lambda: glove.embed(names))
    ours_start_s = best_of(args.repeats, lambda: _fresh_process(_OURS))
    reference_start_s = best_of(args.repeats, lambda: _fresh_process(_SENTENCE_TRANSFORMERS))
    print(json.dumps({
        "names": len(names),
        "minilm_names_per_s": round(len(names) / minilm_s),
        "glove_names_per_s": round(len(names) / glove_s),
        "minilm_over_glove": round(glove_s / minilm_s, 4),
        "startup_transformers_s": round(ours_start_s, 2),
        "startup_sentence_transformers_s": round(reference_start_s, 2),
        "startup_ratio": round(reference_start_s / ours_start_s, 2),
        "torch_threads": __import__("torch").get_num_threads(),
        "load_average": os.getloadavg(),
    }))


if __name__ == "__main__":
    main()
