"""Runs above the library: zeroshot, the AVCA and MZSL-50 protocols, ablate and the demo."""
