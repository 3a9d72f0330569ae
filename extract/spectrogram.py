"""AST's input: Kaldi log-mel filter banks of 16 kHz mono audio, padded or cut to a fixed frame count, normalised.

Reference: YuanGongND/ast `src/dataloader.py` `_wav2fbank` (BSD-3-Clause) and HF transformers
`ASTFeatureExtractor` (Apache-2.0): `torchaudio.compliance.kaldi.fbank` with a Hanning window, 128 mel bins,
10 ms shift, no dither, no energy; zero padding or cutting to `target_frames` *in the log-mel domain*; then
`(fbank - mean) / (2 * std)` with AudioSet's statistics. AST also subtracts the waveform's mean first, which
Kaldi's per-frame DC removal makes moot; HF does not, and neither do we (so our output equals HF's).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi

__all__ = ["AUDIOSET_MEAN", "AUDIOSET_STD", "FRAME_SHIFT_MS", "log_mel"]

AUDIOSET_MEAN = -4.2677393  # AST's AudioSet fbank statistics (the dataset's mean and std)
AUDIOSET_STD = 4.5689974
FRAME_SHIFT_MS = 10.0
_WINDOW_MS = 25.0


def log_mel(waveform: torch.Tensor, sample_rate_hz: int, num_mel_bins: int, target_frames: int
            ) -> tuple[torch.Tensor, int]:
    """Normalised log-mel filter banks with AST's exact arguments.

    Args:
        waveform: mono audio in [-1, 1] at `sample_rate_hz`, at least 25 ms long.
        sample_rate_hz: sample rate (16000 for AST).
        num_mel_bins: F.
        target_frames: frames after padding with zeros (log-mel domain) or cutting.

    Returns:
        (fbank, valid frames before padding or cutting, at most `target_frames`).

    Raises:
        ValueError: the waveform is not 1-d or shorter than one 25 ms window.

    Shapes:
        waveform: (S,). fbank: (target_frames, F) float32, time first (AST's and HF's layout).
    """
    if waveform.ndim != 1:
        raise ValueError(f"waveform must be mono (S,), got shape {tuple(waveform.shape)}")
    window = round(sample_rate_hz * _WINDOW_MS / 1000)
    if waveform.numel() < window:
        raise ValueError(f"waveform of {waveform.numel()} samples is shorter than one {_WINDOW_MS:g} ms window "
                         f"({window} samples)")
    fbank = torchaudio.compliance.kaldi.fbank(
        waveform.float()[None],  # (S,) -> (1, S)
        htk_compat=True, sample_frequency=sample_rate_hz, use_energy=False, window_type="hanning",
        num_mel_bins=num_mel_bins, dither=0.0, frame_shift=FRAME_SHIFT_MS,
    )  # (n, F)
    valid = min(fbank.shape[0], target_frames)
    if fbank.shape[0] < target_frames:
        fbank = F.pad(fbank, (0, 0, 0, target_frames - fbank.shape[0]))  # (n, F) -> (target_frames, F)
    else:
        fbank = fbank[:target_frames]
    return (fbank - AUDIOSET_MEAN) / (2 * AUDIOSET_STD), valid
