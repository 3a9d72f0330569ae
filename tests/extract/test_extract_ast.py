"""The audio backbone: parity with HF transformers' ASTModel, the three weight formats, and errors."""

import logging

import pytest
import torch
import torch.nn.functional as F
from timm.models.deit import VisionTransformerDistilled
from transformers import ASTConfig, ASTModel

from extract import ast_audio
from extract.config import PROFILES

TINY = PROFILES["cpu-small"].audio  # ast_tiny: width 192, 4 layers, 3 heads, 128 mel bins x 512 frames
logger = logging.getLogger(__name__)


def _hf_model(layer_norm_eps: float) -> ASTModel:
    """A random HF ASTModel with ast_tiny's shape; every parameter random (HF zero-initialises some)."""
    config = ASTConfig(hidden_size=192, num_hidden_layers=4, num_attention_heads=3, intermediate_size=768,
                       num_mel_bins=128, max_length=512, layer_norm_eps=layer_norm_eps)
    model = ASTModel(config).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            noise = torch.randn(parameter.shape, generator=generator) * 0.05
            parameter.copy_(1 + noise if "layernorm" in name and name.endswith("weight") else noise)
    return model


def _max_difference(ours: ast_audio.ASTBackbone, reference: ASTModel) -> float:
    fbank = torch.randn(2, 512, 128, generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        tokens = ours.forward_tokens(fbank)
        expected = reference(input_values=fbank).last_hidden_state
    assert tokens.shape == expected.shape == (2, 2 + 12 * 50, 192)
    return float((tokens - expected).abs().max())


def test_tokens_match_hf_last_hidden_state_through_our_hf_loader(tmp_path):
    reference = _hf_model(layer_norm_eps=1e-6)  # AST's own eps: the comparison is tight
    reference.save_pretrained(tmp_path / "hf")  # published names (encoder.layer.N.attention.attention.query ...)
    ours, provenance = ast_audio.build_ast(TINY, tmp_path / "hf", random_init=False, seed=0)
    difference = _max_difference(ours, reference)
    logger.info("AST tokens vs HF ASTModel, eps 1e-6: max abs difference %.2e", difference)
    assert difference < 1e-4
    assert provenance["format"] == "hf-transformers" and provenance["weights"] == str((tmp_path / "hf").resolve())
    # transformers 5 in-memory names (layers.N.attention.q_proj ...) in a plain torch file load the same.
    torch.save(reference.state_dict(), tmp_path / "hf5.pt")
    again, _ = ast_audio.build_ast(TINY, tmp_path / "hf5.pt", random_init=False, seed=0)
    assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), again.state_dict().values(), strict=True))


def test_hf_default_layer_norm_eps_differs_only_slightly():
    reference = _hf_model(layer_norm_eps=1e-12)  # HF's default; AST and timm use 1e-6
    ours, _ = ast_audio.build_ast(TINY, None, random_init=True, seed=0)
    ours.vit.load_state_dict(ast_audio.remap_hf_ast(reference.state_dict()), strict=True)
    difference = _max_difference(ours, reference)
    logger.info("AST tokens vs HF ASTModel, HF eps 1e-12: max abs difference %.2e", difference)
    assert difference < 1e-3


def test_original_ast_checkpoint_round_trip(tmp_path):
    source, _ = ast_audio.build_ast(TINY, None, random_init=True, seed=4)
    state = {f"module.v.{k}": v for k, v in source.vit.state_dict().items()}
    state |= {"module.mlp_head.0.weight": torch.ones(192), "module.mlp_head.0.bias": torch.zeros(192),
              "module.mlp_head.1.weight": torch.zeros(527, 192), "module.mlp_head.1.bias": torch.zeros(527),
              "module.v.head.weight": torch.zeros(1000, 192), "module.v.head_dist.bias": torch.zeros(1000)}
    path = tmp_path / "audioset_tiny.pth"
    torch.save(state, path)
    loaded, provenance = ast_audio.build_ast(TINY, path, random_init=False, seed=0)
    fbank = torch.randn(1, 512, 128)
    with torch.inference_mode():
        assert torch.equal(source(fbank), loaded(fbank))
    assert provenance["format"] == "ast-original" and provenance["seed"] is None
    stray = tmp_path / "stray.pth"
    torch.save(state | {"module.other.weight": torch.zeros(1)}, stray)
    with pytest.raises(ValueError, match="module.other.weight"):
        ast_audio.build_ast(TINY, stray, random_init=False, seed=0)


def test_deit_imagenet_weights_are_adapted_as_ast_does(tmp_path):
    torch.manual_seed(0)
    deit = VisionTransformerDistilled(img_size=384, patch_size=16, embed_dim=192, depth=4, num_heads=3)
    state = deit.state_dict()
    path = tmp_path / "deit.pth"
    torch.save({"model": state}, path)  # DeiT's release format wraps the state dict
    ours, provenance = ast_audio.build_ast(TINY, path, random_init=False, seed=0)
    assert provenance["format"] == "timm-deit"
    loaded = ours.vit.state_dict()
    torch.testing.assert_close(loaded["patch_embed.proj.weight"], state["patch_embed.proj.weight"].sum(1, keepdim=True))
    pos = state["pos_embed"]  # (1, 2 + 24 * 24, 192)
    grid = pos[:, 2:].reshape(1, 24, 24, 192).permute(0, 3, 1, 2)  # (1, 192, 24, 24)
    expected = F.interpolate(grid[:, :, 6:18, :], size=(12, 50), mode="bilinear")  # rows 6:18, 24 -> 50 columns
    torch.testing.assert_close(loaded["pos_embed"][:, 2:], expected.flatten(2).transpose(1, 2))
    assert torch.equal(loaded["pos_embed"][:, :2], pos[:, :2])  # CLS and DIST entries kept
    assert torch.equal(loaded["blocks.3.mlp.fc2.weight"], state["blocks.3.mlp.fc2.weight"])
    # A grid narrower than DeiT's in time is cut to its centre columns instead (AST's rule).
    cut = ast_audio.adapt_deit(state, (12, 12))["pos_embed"][:, 2:]
    torch.testing.assert_close(cut, grid[:, :, 6:18, 6:18].flatten(2).transpose(1, 2))


def test_missing_and_unknown_weights(tmp_path):
    with pytest.raises(FileNotFoundError, match="`random_init=True`"):
        ast_audio.build_ast(PROFILES["paper"].audio, None, random_init=False, seed=0)
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        ast_audio.build_ast(TINY, tmp_path / "nope.pth", random_init=False, seed=0)
    with pytest.raises(FileNotFoundError, match="folder without model.safetensors"):
        ast_audio.build_ast(TINY, tmp_path, random_init=False, seed=0)
    torch.save({"encoder.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not AST weights in a known format"):
        ast_audio.build_ast(TINY, tmp_path / "other.pth", random_init=False, seed=0)


@pytest.mark.slow
def test_architecture_grids_and_input_checks():
    paper, provenance = ast_audio.build_ast(PROFILES["paper"].audio, None, random_init=True, seed=0)
    assert paper.grid == (12, 101) and paper.width == 768  # 1212 patches + CLS + DIST = 1214 tokens
    assert provenance["parameters"] == 86_187_264 and provenance["format"] == "random-init"
    with pytest.raises(ValueError, match=r"fbank must be \(B, 1024, 128\)"):
        paper.forward_tokens(torch.zeros(1, 128, 1024))
