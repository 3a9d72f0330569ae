"""Our fbank against HF transformers' ASTFeatureExtractor (the independent reference), and its edge cases."""

import numpy as np
import pytest
import torch
from transformers import ASTFeatureExtractor

from extract.spectrogram import AUDIOSET_MEAN, AUDIOSET_STD, log_mel


@pytest.mark.parametrize(("seconds", "frames"), [(3.0, 1024), (12.0, 1024), (7.5, 512)])
def test_fbank_equals_hf_feature_extractor(seconds, frames):
    rng = np.random.default_rng(0)
    t = np.arange(round(seconds * 16000)) / 16000
    waveform = (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)
    reference = ASTFeatureExtractor(max_length=frames)(waveform, sampling_rate=16000, return_tensors="np")
    ours, valid = log_mel(torch.from_numpy(waveform), 16000, 128, frames)
    assert ours.shape == (frames, 128) and ours.dtype == torch.float32
    np.testing.assert_allclose(ours.numpy(), reference["input_values"][0], atol=1e-5, rtol=0)
    assert valid == min(frames, (waveform.size - 400) // 160 + 1)


def test_padding_happens_in_the_log_mel_domain_then_normalises():
    fbank, valid = log_mel(torch.zeros(16000), 16000, 128, 1024)  # 1 s of silence: 98 frames
    assert valid == 98
    pad_value = (0.0 - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)  # zeros in log-mel, normalised like the rest
    assert torch.all(fbank[valid:] == pad_value) and not torch.all(fbank[:valid] == pad_value)


def test_ten_seconds_gives_998_frames():
    assert log_mel(torch.zeros(160000), 16000, 128, 1024)[1] == 998  # AST's reference: 10.00 s gives 998 frames


def test_bad_waveforms_raise():
    with pytest.raises(ValueError, match="shorter than one 25 ms window"):
        log_mel(torch.zeros(399), 16000, 128, 1024)
    with pytest.raises(ValueError, match="mono"):
        log_mel(torch.zeros(2, 16000), 16000, 128, 1024)
