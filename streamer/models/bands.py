"""Frequency band tables for BS-RoFormer (fixed widths) and Mel-Band RoFormer (mel filterbank).

The mel filterbank follows librosa's defaults (Slaney mel scale, Slaney area normalisation,
fmin=0, fmax=sr/2, float32 weights), which is what the community checkpoints were trained with.
Only the sign pattern of the weights matters here: a bin belongs to a band where the weight is > 0.
"""
from __future__ import annotations

import numpy as np

# 62 bands, sum 1025 (= 2048 // 2 + 1): the table every shipped BS-RoFormer config writes out.
DEFAULT_FREQS_PER_BANDS: tuple[int, ...] = (
    (2,) * 24 + (4,) * 12 + (12,) * 8 + (24,) * 8 + (48,) * 8 + (128, 129)
)

_F_SP = 200.0 / 3  # Slaney scale: linear part, Hz per mel
_MIN_LOG_HZ = 1000.0
_MIN_LOG_MEL = _MIN_LOG_HZ / _F_SP
_LOG_STEP = np.log(6.4) / 27.0


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    hz = np.asarray(hz, dtype=np.float64)
    mel = hz / _F_SP
    log_region = hz >= _MIN_LOG_HZ
    mel = np.where(log_region, _MIN_LOG_MEL + np.log(np.maximum(hz, 1e-300) / _MIN_LOG_HZ) / _LOG_STEP, mel)
    return mel


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    mel = np.asarray(mel, dtype=np.float64)
    hz = _F_SP * mel
    log_region = mel >= _MIN_LOG_MEL
    return np.where(log_region, _MIN_LOG_HZ * np.exp(_LOG_STEP * (mel - _MIN_LOG_MEL)), hz)


def mel_filterbank(sample_rate: int, n_fft: int, n_mels: int) -> np.ndarray:
    """Triangular Slaney-normalised mel filters, shape (n_mels, n_fft // 2 + 1), float32."""
    n_freqs = n_fft // 2 + 1
    fft_hz = np.linspace(0.0, sample_rate / 2.0, n_freqs)
    mel_edges = np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2.0), n_mels + 2)
    edges_hz = mel_to_hz(mel_edges)
    widths = np.diff(edges_hz)
    # distance of every FFT bin from every edge: (n_mels + 2, n_freqs)
    offsets = edges_hz[:, None] - fft_hz[None, :]
    weights = np.zeros((n_mels, n_freqs), dtype=np.float32)
    for m in range(n_mels):
        rising = -offsets[m] / widths[m]
        falling = offsets[m + 2] / widths[m + 1]
        weights[m] = np.maximum(0.0, np.minimum(rising, falling))
    area = 2.0 / (edges_hz[2 : n_mels + 2] - edges_hz[:n_mels])
    weights *= area[:, None]
    return weights


def mel_band_membership(sample_rate: int, n_fft: int, num_bands: int) -> np.ndarray:
    """Boolean (num_bands, n_fft // 2 + 1): which STFT bins each Mel-RoFormer band covers."""
    fb = mel_filterbank(sample_rate, n_fft, num_bands)
    # The reference forces the two corner weights on (the raw values are -0.0 and ~1e-18),
    # so the first band starts at DC and the last band ends at Nyquist.
    fb[0, 0] = 1.0
    fb[-1, -1] = 1.0
    member = fb > 0
    if not member.any(axis=0).all():
        raise ValueError(
            f"mel bands do not cover every frequency bin (sample_rate={sample_rate}, "
            f"n_fft={n_fft}, num_bands={num_bands}); use fewer bands or a larger n_fft"
        )
    return member


class MelBands:
    """The gather/scatter tables a Mel-Band RoFormer derives from its filterbank (not in state_dict)."""

    def __init__(self, sample_rate: int, n_fft: int, num_bands: int):
        member = mel_band_membership(sample_rate, n_fft, num_bands)
        self.membership = member
        self.num_freqs_per_band = member.sum(axis=1).astype(np.int64)      # nf_k
        self.num_bands_per_freq = member.sum(axis=0).astype(np.int64)      # 1 or 2
        # band-major, ascending bins within each band
        self.freq_indices = np.concatenate([np.nonzero(row)[0] for row in member]).astype(np.int64)

    def stereo_rows(self, channels: int) -> np.ndarray:
        """Rows of the packed (f, s) STFT layout for freq_indices: bin f -> f*S + s."""
        return (self.freq_indices[:, None] * channels + np.arange(channels)[None, :]).reshape(-1)
