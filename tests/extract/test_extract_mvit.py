"""The video backbone: exact parity with torchvision's own forward, weights files, seeding, missing weights."""

from dataclasses import replace

import pytest
import torch
from click.testing import CliRunner
from torchvision.models.video import MViT_V2_S_Weights

from cli import cli
from extract import mvit
from extract.config import PROFILES

TINY, PAPER = PROFILES["cpu-small"].video, PROFILES["paper"].video


def _torchvision_reference(model, video):
    """torchvision's own `MViT.forward`, with a hook on the final norm for the tokens."""
    captured = {}
    handle = model.norm.register_forward_hook(lambda module, args, output: captured.update(tokens=output))
    try:
        logits = model(video)
    finally:
        handle.remove()
    return captured["tokens"], logits


@pytest.mark.parametrize("config", [TINY, pytest.param(PAPER, marks=pytest.mark.slow)], ids=["mvit_tiny", "mvit_v2_s"])
def test_tokens_and_logits_equal_torchvision_forward_exactly(config):
    backbone, provenance = mvit.build_mvit(config, None, random_init=True, seed=3)
    video = torch.randn(1, 3, 16, config.crop_size_px, config.crop_size_px, generator=torch.Generator().manual_seed(0))
    with torch.inference_mode():
        tokens, logits = backbone.forward_tokens(video)
        ref_tokens, ref_logits = _torchvision_reference(backbone.model, video)
    assert tokens.shape == (1, 393, backbone.width) and logits.shape == (1, 400)
    assert backbone.grid == (8, 7, 7)
    assert torch.equal(tokens, ref_tokens) and torch.equal(logits, ref_logits)
    if config.architecture == "mvit_v2_s":
        assert provenance["parameters"] == 34_537_744  # torchvision's meta for mvit_v2_s
    assert provenance["weights"] == provenance["sha256"] == "random-init"


def test_weights_file_round_trip_gives_identical_outputs(tmp_path):
    source, _ = mvit.build_mvit(TINY, None, random_init=True, seed=5)
    path = tmp_path / "tiny.pth"
    torch.save(source.model.state_dict(), path)  # torchvision format: the model's own state dict
    loaded, provenance = mvit.build_mvit(TINY, path, random_init=False, seed=0)
    video = torch.randn(2, 3, 16, 112, 112)
    with torch.inference_mode():
        for a, b in zip(source(video), loaded(video), strict=True):
            assert torch.equal(a, b)
    assert provenance["weights"] == str(path.resolve()) and len(provenance["sha256"]) == 64
    assert provenance["seed"] is None


def test_seeded_random_init_is_reproducible_and_differs_across_seeds():
    # Across processes: tests/extract/test_extract_pipeline.py builds both backbones in a fresh interpreter.
    a, _ = mvit.build_mvit(TINY, None, True, seed=7)
    b, _ = mvit.build_mvit(TINY, None, True, seed=7)
    c, _ = mvit.build_mvit(TINY, None, True, seed=8)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))
    assert not torch.equal(a.state_dict()["model.head.1.weight"], c.state_dict()["model.head.1.weight"])
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    mvit.build_mvit(TINY, None, True, seed=7)
    assert torch.equal(torch.rand(1), before)  # building does not disturb the caller's random stream


def test_missing_weights_name_the_hub_cache_file_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    with pytest.raises(FileNotFoundError) as caught:
        mvit.build_mvit(PAPER, None, random_init=False, seed=0)
    message = str(caught.value)
    expected = tmp_path / "hub" / "hub" / "checkpoints" / "mvit_v2_s-ae3be167.pth"
    assert mvit.hub_cache_path() == expected
    assert str(expected) in message and mvit.WEIGHTS_URL in message and "`random_init=True`" in message
    with pytest.raises(FileNotFoundError, match="nope.pth"):
        mvit.build_mvit(PAPER, tmp_path / "nope.pth", random_init=False, seed=0)


def test_bad_weights_files_are_rejected(tmp_path):
    source, _ = mvit.build_mvit(TINY, None, random_init=True, seed=5)
    state = source.model.state_dict()
    renamed = tmp_path / "mvit_v2_s-00000000.pth"  # a torchvision name whose hash prefix cannot match
    torch.save(state, renamed)
    with pytest.raises(ValueError, match="SHA-256 does not start with 00000000"):
        mvit.build_mvit(TINY, renamed, random_init=False, seed=0)
    partial = tmp_path / "partial.pth"
    torch.save({k: v for k, v in state.items() if not k.startswith("head.")}, partial)
    with pytest.raises(ValueError, match=r"partial.pth: weights do not fit .* 2 missing \['head.1.bias'"):
        mvit.build_mvit(TINY, partial, random_init=False, seed=0)
    with pytest.raises(ValueError, match="both video weights"):
        mvit.build_mvit(TINY, partial, random_init=True, seed=0)
    pickled = tmp_path / "pickled.pth"
    torch.save({"weights": state, "note": object.__new__(_Opaque)}, pickled)
    with pytest.raises(ValueError, match="readable without running code"):
        mvit.build_mvit(TINY, pickled, random_init=False, seed=0)
    text = tmp_path / "notes.pth"
    text.write_text("not a checkpoint\n")
    with pytest.raises(ValueError) as info:
        mvit.build_mvit(TINY, text, random_init=False, seed=0)
    assert str(info.value) == (f"{text}: not a PyTorch checkpoint readable without running code (UnpicklingError: "
                               "Unsupported operand 110)")  # not torch's 6 lines asking to file an issue
    (tmp_path / "clip.mp4").write_bytes(b"any")
    result = CliRunner().invoke(cli, ["extract", "--videos", str(tmp_path / "clip.mp4"), "--out",
                                      str(tmp_path / "s.zarr"), "--profile", "paper", "--video-weights", str(text)])
    assert result.exit_code == 1 and result.output == f"Error: {info.value}\n"
    junk = tmp_path / "junk.safetensors"
    junk.write_text("junk\n")
    with pytest.raises(ValueError, match=r"junk.safetensors: not a readable safetensors file \(SafetensorError: "):
        mvit.build_mvit(TINY, junk, random_init=False, seed=0)


class _Opaque:
    """A class `weights_only` unpickling refuses to construct."""


def test_forward_checks_the_input_shape():
    backbone, _ = mvit.build_mvit(replace(TINY), None, True, 0)
    with pytest.raises(ValueError, match=r"video must be \(B, 3, 16, 112, 112\)"):
        backbone.forward_tokens(torch.zeros(1, 3, 8, 112, 112))


def test_preprocessing_comes_from_the_weights_meta():
    meta = MViT_V2_S_Weights.KINETICS400_V1.meta
    assert (PAPER.frames_per_view, PAPER.crop_size_px, PAPER.crop_size_px) == (meta["min_temporal_size"],
                                                                              *meta["min_size"])
    assert mvit.VIDEO_MEAN == (0.45, 0.45, 0.45) and mvit.VIDEO_STD == (0.225, 0.225, 0.225)
    assert len(mvit.KINETICS400_CATEGORIES) == 400 and mvit.KINETICS400_CATEGORIES[0] == "abseiling"
