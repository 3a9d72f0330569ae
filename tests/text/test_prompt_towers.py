"""CLIP / CLAP class vectors (`clip:`, `clap:`, `clipclap:` sources) on tiny random-init towers saved with their
tokenizers: ClipClap's templates and ensembling against transformers' own full models, concatenation, caching,
and one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformers import (
    ClapConfig,
    ClapModel,
    ClapTextConfig,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
    CLIPTokenizer,
    RobertaTokenizer,
)
from transformers.convert_slow_tokenizer import bytes_to_unicode

from common.errors import InputError
from extract import clip_clap
from extract.config import PROFILES
from text import prompt_towers
from text.class_embeddings import load_embedding_source

SMALL = PROFILES["clipclap-cpu-small"]
_BYTES = list(bytes_to_unicode().values())  # byte-level BPE alphabet: a vocabulary without merges spells characters


def _clip_folder(folder, seed=5):
    vocab = {c: i for i, c in enumerate(_BYTES)} | {c + "</w>": len(_BYTES) + i for i, c in enumerate(_BYTES)}
    vocab |= {"<|startoftext|>": len(vocab), "<|endoftext|>": len(vocab) + 1}
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[])
    text = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          vocab_size=len(vocab), max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
                          eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text.to_dict(), projection_dim=16,
                                 vision_config=clip_clap.clip_vision_config(SMALL.video).to_dict())).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


def _clap_folder(folder, seed=6):
    vocab = {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3} | {c: 4 + i for i, c in enumerate(_BYTES)}
    vocab["<mask>"] = len(vocab)
    tokenizer = RobertaTokenizer(vocab=vocab, merges=[])
    text = ClapTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          vocab_size=len(vocab), max_position_embeddings=130)
    torch.manual_seed(seed)
    model = ClapModel(ClapConfig(text_config=text.to_dict(), projection_dim=16,
                                 audio_config=clip_clap.clap_audio_config(SMALL.audio).to_dict())).eval()
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return model, tokenizer


@pytest.fixture(scope="module")
def towers(tmp_path_factory):
    root = tmp_path_factory.mktemp("towers")
    return {"clip": (root / "clip", *_clip_folder(root / "clip")),
            "clap": (root / "clap", *_clap_folder(root / "clap"))}


def _expected(model, tokenizer, names, templates, max_length):
    """ClipClap's rule written out on transformers' full model: unit prompt vectors, mean, renormalised."""
    rows = []
    for name in names:
        tokens = tokenizer([t.format(name) for t in templates], padding=True, truncation=True, max_length=max_length,
                           return_tensors="pt")
        with torch.no_grad():
            prompts = model.get_text_features(**tokens).pooler_output
        mean = F.normalize(prompts, dim=-1).mean(dim=0)
        rows.append((mean / mean.norm()).numpy())
    return np.stack(rows)


def test_clip_and_clap_sources_ensemble_clipclaps_templates(towers):
    names = ["ApplyEyeMakeup", "playing guitar"]
    sentences = ["Apply Eye Makeup", "playing guitar"]  # class_name_sentence: what goes into the templates
    for kind, max_length in (("clip", 77), ("clap", 128)):
        folder, model, tokenizer = towers[kind]
        source = load_embedding_source(f"{kind}:{folder}")
        vectors = source.embed(names)
        assert vectors.shape == (2, 16) and source.dim == 16
        expected = _expected(model, tokenizer, sentences, prompt_towers.TEMPLATES["person"][kind], max_length)
        np.testing.assert_allclose(vectors, expected, rtol=1e-4, atol=1e-5)
        other = load_embedding_source(f"{kind}-vggsound:{folder}").embed(names)
        np.testing.assert_allclose(other, _expected(model, tokenizer, sentences,
                                                    prompt_towers.TEMPLATES["vggsound"][kind], max_length),
                                   rtol=1e-4, atol=1e-5)
        assert not np.allclose(other, vectors)  # the template set matters
        assert "prompt ensemble" in source.provenance()["composition"]
    assert len(prompt_towers.TEMPLATES["person"]["clip"]) == 48 and len(prompt_towers.TEMPLATES["person"]["clap"]) == 30


def test_clipclap_concatenates_clip_then_clap_and_reuses_the_towers(towers, monkeypatch):
    clip_folder, clap_folder = towers["clip"][0], towers["clap"][0]
    names = ["Basketball", "dog barking"]
    joined = load_embedding_source(f"clipclap:{clip_folder},{clap_folder}").embed(names)
    clip = load_embedding_source(f"clip:{clip_folder}").embed(names)
    clap = load_embedding_source(f"clap:{clap_folder}").embed(names)
    np.testing.assert_allclose(joined, np.concatenate([clip, clap], axis=1), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(joined, axis=1), np.sqrt(2), rtol=1e-5)  # as ClipClap feeds its head
    unit = load_embedding_source(f"clipclap:{clip_folder},{clap_folder}", normalise=True).embed(names)
    np.testing.assert_allclose(unit, joined / np.sqrt(2), rtol=1e-5)
    tower = prompt_towers.text_tower("clip", str(clip_folder))
    monkeypatch.setattr(tower, "_model", None)  # cached prompts: no forward runs again
    np.testing.assert_array_equal(load_embedding_source(f"clip:{clip_folder}").embed(names), clip)


def test_bad_specs_and_folders_are_one_line_errors(towers, tmp_path):
    clip_folder, clap_folder = towers["clip"][0], towers["clap"][0]
    with pytest.raises(InputError, match="not CLIP text weights in HF's layout") as caught:
        load_embedding_source(f"clip:{clap_folder}")
    assert "\n" not in str(caught.value) and str(clap_folder) in str(caught.value)
    with pytest.raises(InputError, match="needs two model folders"):
        load_embedding_source(f"clipclap:{clip_folder}")
    with pytest.raises(InputError, match="needs a file"):
        load_embedding_source("clap")
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(FileNotFoundError, match="not a model folder"):
        load_embedding_source(f"clip:{tmp_path / 'model.safetensors'}")
