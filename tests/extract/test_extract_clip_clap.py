"""The CLIP image and CLAP audio towers (the clipclap profiles): against transformers' own full models on the same
inputs, their weight formats and errors, ClipClap's frame and audio window, and a store made end to end."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import zarr
from safetensors.torch import save_file
from transformers import (
    ClapConfig,
    ClapFeatureExtractor,
    ClapModel,
    ClapTextConfig,
    CLIPConfig,
    CLIPModel,
    CLIPTextConfig,
)

from common.errors import InputError
from extract import clip_clap, views
from extract.config import PROFILES, AudioConfig, VideoConfig
from extract.pipeline import ClipExtractor
from features.config import RunnerConfig
from features.runner import run_extraction
from features.store import TokenStore
from tests.features.conftest import write_test_clip

SMALL = PROFILES["clipclap-cpu-small"]
_CLIP_TEXT = CLIPTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            vocab_size=300, max_position_embeddings=77, projection_dim=16)
_CLAP_TEXT = ClapTextConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                            vocab_size=300, max_position_embeddings=80, projection_dim=16)


def save_clip_model(folder, video: VideoConfig = SMALL.video, seed: int = 3):
    """A random-init full CLIPModel (text and image towers) of the tiny image config, saved as HF does."""
    torch.manual_seed(seed)
    vision = clip_clap.clip_vision_config(video).to_dict()
    model = CLIPModel(CLIPConfig(vision_config=vision, text_config=_CLIP_TEXT.to_dict(), projection_dim=16)).eval()
    model.save_pretrained(folder)
    return model


def save_clap_model(folder, audio: AudioConfig = SMALL.audio, seed: int = 4):
    torch.manual_seed(seed)
    config = ClapConfig(text_config=_CLAP_TEXT.to_dict(), audio_config=clip_clap.clap_audio_config(audio).to_dict(),
                        projection_dim=16)
    model = ClapModel(config).eval()
    model.save_pretrained(folder)
    return model


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    return folder, save_clip_model(folder)


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clap")
    return folder, save_clap_model(folder)


def test_clip_image_tower_equals_transformers_clip_model(clip_folder):
    folder, reference = clip_folder
    backbone, provenance = clip_clap.build_clip_image(SMALL.video, folder, random_init=False, seed=0)
    assert provenance["format"] == "hf-clip" and len(provenance["sha256"]) == 64
    video = torch.randn(3, 3, 2, 32, 32)  # (B, 3, T, S, S): two frames per view
    with torch.no_grad():
        tokens, logits = backbone(video)
        frames = video.transpose(1, 2).reshape(6, 3, 32, 32)
        expected = F.normalize(reference.get_image_features(pixel_values=frames).pooler_output, dim=-1)
    assert tokens.shape == (3, 1, 16) and logits.shape == (3, 0)
    torch.testing.assert_close(tokens[:, 0], expected.view(3, 2, 16).mean(dim=1), rtol=1e-5, atol=1e-5)
    # the vision-only file (CLIPVisionModelWithProjection) loads the same, and a bare safetensors file too
    state = {k: v for k, v in reference.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    save_file(state, str(folder.parent / "vision.safetensors"))
    alone, _ = clip_clap.build_clip_image(SMALL.video, folder.parent / "vision.safetensors", False, 0)
    with torch.no_grad():
        torch.testing.assert_close(alone(video)[0], tokens)


def test_clap_audio_tower_equals_transformers_clap_model(clap_folder):
    folder, reference = clap_folder
    backbone, provenance = clip_clap.build_clap_audio(SMALL.audio, folder, random_init=False, seed=0)
    assert provenance["format"] == "hf-clap"
    rate, window = SMALL.audio.sample_rate_hz, SMALL.audio.window_samples
    short = torch.sin(torch.arange(window // 2) * 0.05) * 0.5  # half the window: zero-padded at the end
    features, valid = clip_clap.clap_features(short, SMALL.audio)
    assert features.shape == (SMALL.audio.target_frames + 1, SMALL.audio.num_mel_bins)
    assert valid == window // 2 // 480 + 1
    full, _ = clip_clap.clap_features(torch.cat([short, torch.zeros(window - short.numel())]), SMALL.audio)
    torch.testing.assert_close(features, full)  # padding = zeros, not CLAP's default repetition
    batch = torch.stack([features, clip_clap.clap_features(torch.randn(window) * 0.1, SMALL.audio)[0]])
    with torch.no_grad():
        ours = backbone(batch)
        expected = reference.get_audio_features(input_features=batch.unsqueeze(1)).pooler_output  # unit norm
    assert ours.shape == (2, 1, 16) and rate == 48000
    torch.testing.assert_close(ours[:, 0], expected, rtol=1e-5, atol=1e-5)


def test_weights_in_another_layout_are_one_line_errors(clip_folder, clap_folder, tmp_path):
    clip_path, clap_path = clip_folder[0], clap_folder[0]
    cases = {
        "clap-as-clip": (clip_clap.build_clip_image, SMALL.video, clap_path, "not CLIP image weights in HF's layout"),
        "clip-as-clap": (clip_clap.build_clap_audio, SMALL.audio, clip_path, "not CLAP audio weights in HF's layout"),
    }
    save_file({"audio_encoder.audio_enc.patch_embed.proj.weight": torch.zeros(1)}, str(tmp_path / "wavcaps.pt.st"))
    (tmp_path / "wavcaps.safetensors").write_bytes((tmp_path / "wavcaps.pt.st").read_bytes())
    cases["wavcaps"] = (clip_clap.build_clap_audio, SMALL.audio, tmp_path / "wavcaps.safetensors", "WavCaps")
    torch.save({"visual.conv1.weight": torch.zeros(1)}, tmp_path / "openai.pt")
    cases["openai"] = (clip_clap.build_clip_image, SMALL.video, tmp_path / "openai.pt", "OpenAI / open_clip")
    wider = tmp_path / "wider"
    save_clip_model(wider, replace(SMALL.video, crop_size_px=48))  # another position grid: shapes differ
    cases["shape"] = (clip_clap.build_clip_image, SMALL.video, wider, "weights do not fit")
    (tmp_path / "code.pt").write_bytes(b"not a checkpoint at all")
    cases["garbage"] = (clip_clap.build_clip_image, SMALL.video, tmp_path / "code.pt", "not a PyTorch checkpoint")
    for name, (build, config, path, message) in cases.items():
        with pytest.raises(InputError, match=message) as caught:
            build(config, path, False, 0)
        assert "\n" not in str(caught.value) and str(path.name) in str(caught.value), name
    with pytest.raises(FileNotFoundError, match="huggingface-cli download openai/clip-vit-base-patch32"):
        clip_clap.build_clip_image(replace(SMALL.video, architecture="clip_vit_b32", crop_size_px=224), None, False, 0)
    with pytest.raises(InputError, match="random init"):
        clip_clap.build_clip_image(SMALL.video, clip_path, True, 0)


def test_clipclap_profile_takes_the_middle_frame_at_clip_size():
    video = PROFILES["clipclap"].video
    assert (video.views, video.frames_per_view, video.resize_short_side_px, video.crop_size_px) == (1, 1, 224, 224)
    for frames in (30, 31, 164):  # ClipClap: frame_count // 2 (ours: the middle of the 30 fps grid)
        assert abs(int(views.view_grid_indices(frames, video)[0, 0]) - frames // 2) <= 1
    audio = PROFILES["clipclap"].audio
    assert audio.window_samples == 480000  # CLAP's 10 s at 48 kHz: a longer window would be cut at random
    waveform = torch.sin(torch.arange(audio.window_samples) * 0.01) * 0.3
    features, valid = clip_clap.clap_features(waveform, audio)
    laion = ClapFeatureExtractor()(waveform.numpy(), sampling_rate=48000, truncation="rand_trunc", padding="pad",
                                   return_tensors="pt").input_features  # LAION CLAP's feature defaults
    assert features.shape == (1001, 64) and valid == 1001
    torch.testing.assert_close(features, laion[0, 0].float())
    with pytest.raises(InputError, match="any number of frames of 224 px"):
        replace(video, crop_size_px=192)
    with pytest.raises(InputError, match="sample_rate_hz must be 48000"):
        AudioConfig(architecture="clap_htsat_unfused", num_mel_bins=64, target_frames=1000)


def test_clipclap_profile_extracts_into_a_store(tmp_path):
    folder = tmp_path / "videos"
    paths = [write_test_clip(folder / label / f"clip{i}.mp4", index=i, audio=i != 2)
             for i, label in enumerate(["barking", "drumming", "barking"])]
    manifest = folder / "manifest.csv"
    manifest.write_text("path,class_name,split\n" + "".join(
        f"{p.relative_to(folder).as_posix()},{p.parent.name},seen\n" for p in paths))
    summary = run_extraction(RunnerConfig(videos=manifest, out=tmp_path / "store.zarr", progress=False,
                                          extract=replace(SMALL, decode_in="threads")))
    assert (summary.done, summary.failed) == (3, 0)
    store = TokenStore.open(tmp_path / "store.zarr")
    layout = store.token_layout
    assert (layout.views, layout.video_tokens, layout.audio_tokens, layout.kinetics_classes) == (2, 1, 1, 0)
    assert layout.video_grid is None and store.extract_config["video"]["architecture"] == "clip_tiny"
    assert store.provenance["audio"]["architecture"] == "clap_tiny"
    data = store.read(store.indices())
    assert data["has_audio"].tolist() == [True, True, False]
    norms = np.linalg.norm(data["audio_tokens"][:2, 0].astype(np.float32), axis=-1)
    np.testing.assert_allclose(norms, 1.0, atol=2e-3)  # CLAP's vector is unit length (ClipClap normalises)
    direct = ClipExtractor(SMALL).extract(paths[0])
    np.testing.assert_allclose(data["video_tokens"][0].astype(np.float32), direct.video_tokens.astype(np.float32),
                               atol=2e-3)



def test_a_store_resumes_only_with_the_weights_it_was_made_with(tmp_path):
    """Tokens of other weights in one store would mix two feature spaces without a word. (The tiny towers exist only
    random-init, so the store's record of its weights is edited to another file's digest, as a store made with
    other weights would hold.)"""
    folder = tmp_path / "videos"
    paths = [write_test_clip(folder / "barking" / f"clip{i}.mp4", index=i) for i in range(2)]
    manifest = folder / "manifest.csv"
    manifest.write_text("path,class_name,split\n" + "".join(
        f"{p.relative_to(folder).as_posix()},barking,seen\n" for p in paths))
    config = RunnerConfig(videos=manifest, out=tmp_path / "store.zarr", progress=False,
                          extract=replace(SMALL, decode_in="threads"))
    assert run_extraction(config).extracted == 2
    assert run_extraction(config).skipped == 2  # the same (random-init) weights resume
    group = zarr.open_group(tmp_path / "store.zarr", mode="r+")
    provenance = dict(group.attrs["provenance"])
    provenance["audio"] = {**provenance["audio"], "sha256": "0123456789abcdef" * 4}
    group.attrs["provenance"] = provenance
    with pytest.raises(InputError, match=r"its audio tokens were made with other weights \(0123456789ab\)") as error:
        run_extraction(config)
    assert "\n" not in str(error.value) and "store.zarr" in str(error.value)
