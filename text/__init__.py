"""Class-name text: name maps and normalisation, embedding sources (phi), word vectors, the MLM vocabulary."""
