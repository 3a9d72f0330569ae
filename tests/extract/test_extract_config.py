"""Extraction configs: the named profiles, JSON round trips, validation."""

import json
from dataclasses import replace

import pytest

from extract.config import PROFILES, AudioConfig, ExtractConfig, TokenConfig, VideoConfig


def test_paper_profile_is_the_papers_setting():
    paper = PROFILES["paper"]
    # The defaults are the paper's, but for where frames are scaled: stores made before the field did the reference.
    assert replace(paper, frame_scaling="reference") == ExtractConfig()
    assert paper.frame_scaling == PROFILES["mvit-1x5"].frame_scaling == "worker"
    assert (paper.video.architecture, paper.video.crops, paper.video.temporal_views) == ("mvit_v2_s", 3, 4)
    assert (paper.video.frames_per_view, paper.video.frame_stride, paper.video.sampling_fps) == (16, 4, 30.0)
    assert (paper.audio.architecture, paper.audio.num_mel_bins, paper.audio.target_frames) == ("ast_vit_b", 128, 1024)
    assert not paper.random_init and not paper.full_tokens and paper.device == "cuda"
    one_by_five = PROFILES["mvit-1x5"]
    assert (one_by_five.video.crops, one_by_five.video.temporal_views) == (1, 5)
    assert one_by_five.video.resize_short_side_px == 256
    small = PROFILES["cpu-small"]
    assert small.random_init and small.device == "cpu" and small.video.views == 2
    assert all(name == config.profile for name, config in PROFILES.items())


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_to_dict_is_json_and_round_trips(name):
    config = PROFILES[name]
    data = config.to_dict()
    assert json.loads(json.dumps(data)) == data  # equal to what a store reads back (no tuples)
    assert data["tokens"]["video_pooled_grid"] == [4, 2, 2]
    assert ExtractConfig.from_dict(data) == config
    assert ExtractConfig.from_dict(json.loads(json.dumps(data))) == config


def test_overrides_with_replace_and_validation():
    paper = PROFILES["paper"]
    one_crop = replace(paper, video=replace(paper.video, crops=1), device="cpu", random_init=True, seed=3)
    assert one_crop.video.views == 4 and one_crop.to_dict()["video"]["crops"] == 1
    with pytest.raises(ValueError, match="crops must be 1 or 3"):
        replace(paper.video, crops=2)
    with pytest.raises(ValueError, match="mvit_v2_s takes exactly 16 frames of 224 px"):
        replace(paper.video, crop_size_px=112)
    with pytest.raises(ValueError, match="ast_vit_b takes exactly 128 mel bins x 1024 frames"):
        replace(paper.audio, target_frames=512)
    with pytest.raises(ValueError, match="exist only with random weights"):
        replace(PROFILES["cpu-small"], random_init=False)
    with pytest.raises(ValueError, match="device"):
        replace(paper, device="gpu")
    with pytest.raises(ValueError, match="precision"):
        replace(paper, precision="fp16")
    with pytest.raises(ValueError, match="batch_views"):
        replace(paper, batch_views=0)
    with pytest.raises(ValueError, match="video must be a VideoConfig"):
        replace(paper, video={"crops": 1})
    with pytest.raises(ValueError, match="video_pooled_grid"):
        TokenConfig(video_pooled_grid=(4, 2))
    with pytest.raises(ValueError, match="sample_rate_hz must be 16000"):
        AudioConfig(sample_rate_hz=22050)
    with pytest.raises(ValueError, match="frames_per_view must be even"):
        VideoConfig(architecture="mvit_tiny", frames_per_view=7)


def test_from_dict_rejects_unknown_keys():
    data = PROFILES["paper"].to_dict()
    with pytest.raises(ValueError, match=r"unknown extract config keys \['colour'\]"):
        ExtractConfig.from_dict({**data, "colour": "red"})
    with pytest.raises(ValueError, match=r"unknown video config keys \['fps'\]"):
        ExtractConfig.from_dict({**data, "video": {**data["video"], "fps": 25}})


def test_audio_window_samples():
    assert AudioConfig().window_samples == 1023 * 160 + 400  # exactly 1024 frames of 25 ms every 10 ms
