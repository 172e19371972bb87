"""BS-RoFormer and Mel-Band RoFormer, numerically equal to MSST's classes and key-compatible with
their checkpoints.

The state_dict keeps the reference layout (one small MLP per band), but the forward pass does not
loop over bands: bands of equal width are run together as batched matmuls (``torch.baddbmm``) on
weights packed from the per-band parameters. In eval mode the packed weights are cached and
re-packed automatically when a parameter changes (load_state_dict, ``.to()``, in-place edits).
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from rotary_embedding_torch import RotaryEmbedding
from torch import nn

from .bands import DEFAULT_FREQS_PER_BANDS, MelBands
from .layers import RMSNorm, Transformer, mlp


class BandSplit(nn.Module):
    """Per band: RMSNorm(din_k) then Linear(din_k -> dim). Keys ``to_features.{k}.{0,1}``."""

    def __init__(self, dim: int, dim_inputs: Sequence[int]):
        super().__init__()
        self.dim_inputs = tuple(dim_inputs)
        self.to_features = nn.ModuleList(
            nn.Sequential(RMSNorm(din), nn.Linear(din, dim)) for din in self.dim_inputs
        )


class MaskEstimator(nn.Module):
    """Per band: an MLP (Tanh between Linears) then GLU. Keys ``to_freqs.{k}.0.{2i}``."""

    def __init__(self, dim: int, dim_inputs: Sequence[int], depth: int, mlp_expansion_factor: int):
        super().__init__()
        hidden = dim * mlp_expansion_factor
        self.dim_inputs = tuple(dim_inputs)
        self.num_linears = depth
        self.to_freqs = nn.ModuleList(
            nn.Sequential(mlp(dim, din * 2, hidden, depth), nn.GLU(dim=-1)) for din in self.dim_inputs
        )


class _WidthGroups:
    """Bands grouped by equal width, with the index maps to gather and restore band order."""

    def __init__(self, widths: Sequence[int]):
        offsets = [0]
        for w in widths:
            offsets.append(offsets[-1] + w)
        by_width: dict[int, list[int]] = {}
        for k, w in enumerate(widths):
            by_width.setdefault(w, []).append(k)
        self.groups: list[tuple[int, list[int]]] = list(by_width.items())
        order = [k for _, bands in self.groups for k in bands]
        self.band_order_is_identity = order == list(range(len(widths)))
        inv = [0] * len(widths)
        for pos, k in enumerate(order):
            inv[k] = pos
        self.inverse_band_order = torch.tensor(inv, dtype=torch.long)
        # input columns of each group, and whether they form one contiguous slice
        self.columns: list[torch.Tensor | slice] = []
        col_order: list[int] = []
        for w, bands in self.groups:
            cols = [c for k in bands for c in range(offsets[k], offsets[k] + w)]
            col_order.extend(cols)
            if cols == list(range(cols[0], cols[-1] + 1)):
                self.columns.append(slice(cols[0], cols[-1] + 1))
            else:
                self.columns.append(torch.tensor(cols, dtype=torch.long))
        inv_cols = [0] * len(col_order)
        for pos, c in enumerate(col_order):
            inv_cols[c] = pos
        self.column_order_is_identity = col_order == list(range(len(col_order)))
        self.inverse_column_order = torch.tensor(inv_cols, dtype=torch.long)
        self.bands: list[torch.Tensor | slice] = [
            slice(b[0], b[-1] + 1) if b == list(range(b[0], b[-1] + 1)) else torch.tensor(b, dtype=torch.long)
            for _, b in self.groups
        ]

    def to(self, device: torch.device) -> None:
        """Keep the index tensors on the model's device (no host-to-device copy per call, which a CUDA
        graph could not capture)."""
        move = lambda t: t.to(device) if isinstance(t, torch.Tensor) else t  # noqa: E731
        self.inverse_band_order = move(self.inverse_band_order)
        self.inverse_column_order = move(self.inverse_column_order)
        self.columns = [move(c) for c in self.columns]
        self.bands = [move(b) for b in self.bands]


def _take(t: torch.Tensor, index: torch.Tensor | slice, dim: int) -> torch.Tensor:
    """A contiguous range as a view, anything else as an index_select copy."""
    if isinstance(index, slice):
        return t.narrow(dim, index.start, index.stop - index.start)
    return t.index_select(dim, index.to(t.device))


class _RoformerBase(nn.Module):
    """Shared structure and forward pass; subclasses define the band tables and output norms."""

    is_mel: bool = False

    def __init__(
        self,
        *,
        dim: int,
        depth: int,
        band_widths: Sequence[int],
        stereo: bool = False,
        num_stems: int = 1,
        time_transformer_depth: int = 2,
        freq_transformer_depth: int = 2,
        linear_transformer_depth: int = 0,
        dim_head: int = 64,
        heads: int = 8,
        attn_dropout: float = 0.0,
        ff_dropout: float = 0.0,
        stft_n_fft: int = 2048,
        stft_hop_length: int = 512,
        stft_win_length: int = 2048,
        stft_normalized: bool = False,
        zero_dc: bool = True,
        mask_linears: int = 2,
        mlp_expansion_factor: int = 4,
        skip_connection: bool = False,
        norm_output: bool = False,
    ):
        super().__init__()
        self.dim = dim
        self.stereo = stereo
        self.audio_channels = 2 if stereo else 1
        self.num_stems = num_stems
        self.skip_connection = skip_connection
        self.zero_dc = zero_dc
        self.stft_n_fft = stft_n_fft
        self.stft_hop_length = stft_hop_length
        self.stft_win_length = stft_win_length
        self.stft_normalized = stft_normalized

        self.layers = nn.ModuleList()
        time_rotary = RotaryEmbedding(dim=dim_head)
        freq_rotary = RotaryEmbedding(dim=dim_head)
        common = dict(dim=dim, heads=heads, dim_head=dim_head, attn_dropout=attn_dropout,
                      ff_dropout=ff_dropout, norm_output=norm_output)
        for _ in range(depth):
            blocks = []
            if linear_transformer_depth > 0:
                blocks.append(Transformer(depth=linear_transformer_depth, linear_attn=True, **common))
            blocks.append(Transformer(depth=time_transformer_depth, rotary_embed=time_rotary, **common))
            blocks.append(Transformer(depth=freq_transformer_depth, rotary_embed=freq_rotary, **common))
            self.layers.append(nn.ModuleList(blocks))
        if not norm_output:
            self.final_norm = RMSNorm(dim)

        widths = tuple(2 * self.audio_channels * w for w in band_widths)
        self.band_split = BandSplit(dim, widths)
        self.mask_estimators = nn.ModuleList(
            MaskEstimator(dim, widths, mask_linears, mlp_expansion_factor) for _ in range(num_stems)
        )
        self._groups = _WidthGroups(widths)
        self.register_buffer("stft_window", torch.hann_window(stft_win_length), persistent=False)
        self._packed: dict[str, Any] | None = None
        self._packed_key: tuple | None = None

    # ------------------------------------------------------------------ packing
    def _pack_key(self) -> tuple:
        # inference tensors (a model built under inference_mode) carry no version counter
        return tuple((p.data_ptr(), -1 if p.is_inference() else p._version) for p in self._band_parameters())

    def _band_parameters(self):
        yield from self.band_split.parameters()
        yield from self.mask_estimators.parameters()

    def packed_weights(self) -> dict[str, Any]:
        """Per-band weights stacked by width group; cached unless gradients must flow."""
        if self.training and torch.is_grad_enabled():
            return self._pack()
        key = self._pack_key()
        if self._packed is None or key != self._packed_key:
            with torch.no_grad():
                self._packed = self._pack()
            self._packed_key = key
        return self._packed

    def _pack(self) -> dict[str, Any]:
        feats = self.band_split.to_features
        split = []
        for w, bands in self._groups.groups:
            split.append((
                torch.stack([feats[k][0].gamma for k in bands]).unsqueeze(1) * math.sqrt(w),  # (n,1,w)
                torch.stack([feats[k][1].weight.t() for k in bands]),                         # (n,w,D)
                torch.stack([feats[k][1].bias for k in bands]).unsqueeze(1),                  # (n,1,D)
            ))
        masks = []
        for est in self.mask_estimators:
            mlps = [seq[0] for seq in est.to_freqs]
            n_lin = est.num_linears
            shared = []  # layers whose shapes do not depend on the band width
            for i in range(n_lin - 1):
                shared.append((
                    torch.stack([m[2 * i].weight.t() for m in mlps]),               # (K,in,h)
                    torch.stack([m[2 * i].bias for m in mlps]).unsqueeze(1),        # (K,1,h)
                ))
            last = []
            for _, bands in self._groups.groups:
                last.append((
                    torch.stack([mlps[k][2 * (n_lin - 1)].weight.t() for k in bands]),        # (n,in,2w)
                    torch.stack([mlps[k][2 * (n_lin - 1)].bias for k in bands]).unsqueeze(1),  # (n,1,2w)
                ))
            masks.append((shared, last))
        return {"split": split, "masks": masks}

    def __getstate__(self):
        # the packed weights are a cache: never copied or pickled (a worker process re-packs them)
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state["_packed"] = None
        state["_packed_key"] = None
        return state

    def _apply(self, fn, *args, **kwargs):
        self._packed = None
        self._packed_key = None
        out = super()._apply(fn, *args, **kwargs)
        if self.stft_window.device.type != "meta":
            self._groups.to(self.stft_window.device)
        return out

    # ------------------------------------------------------------------ pieces
    def _band_split(self, x: torch.Tensor, packed: dict[str, Any]) -> torch.Tensor:
        """(B, T, sum din) -> (K, B*T, D), bands in order."""
        g = self._groups
        rows = x.shape[0] * x.shape[1]
        flat = x.reshape(rows, x.shape[-1])
        outs = []
        for (w, bands), cols, (gamma, weight, bias) in zip(g.groups, g.columns, packed["split"]):
            xg = _take(flat, cols, dim=1)
            xg = xg.reshape(rows, len(bands), w).transpose(0, 1)                       # (n, BT, w)
            xg = F.normalize(xg, dim=-1) * gamma
            outs.append(torch.baddbmm(bias, xg, weight))
        out = torch.cat(outs, dim=0)
        if not g.band_order_is_identity:
            out = out.index_select(0, g.inverse_band_order.to(out.device))
        return out

    def _mask(self, xk: torch.Tensor, stem: int, packed: dict[str, Any]) -> torch.Tensor:
        """(K, BT, D) -> (BT, sum din) for one mask estimator, bands in order."""
        g = self._groups
        shared, last = packed["masks"][stem]
        h = xk
        for weight, bias in shared:
            h = torch.tanh(torch.baddbmm(bias, h, weight))
        outs = []
        for bands, (weight, bias) in zip(g.bands, last):
            hg = _take(h, bands, dim=0)                                            # (n, BT, in)
            y = torch.baddbmm(bias, hg, weight)                                       # (n, BT, 2w)
            y = F.glu(y, dim=-1)                                                      # (n, BT, w)
            outs.append(y.transpose(0, 1).reshape(y.shape[1], -1))
        out = torch.cat(outs, dim=-1)
        if not g.column_order_is_identity:
            out = out.index_select(-1, g.inverse_column_order.to(out.device))
        return out

    def _stft(self, audio: torch.Tensor) -> torch.Tensor:
        """(B, S, L) float -> packed real STFT (B, F*S, T, 2), rows f*S + s."""
        b, s, length = audio.shape
        with torch.autocast(device_type=audio.device.type, enabled=False):
            spec = torch.stft(
                audio.reshape(b * s, length).float(), n_fft=self.stft_n_fft, hop_length=self.stft_hop_length,
                win_length=self.stft_win_length, window=self.stft_window.float(), normalized=self.stft_normalized,
                center=True, onesided=True, return_complex=True,
            )
        spec = torch.view_as_real(spec)                                              # (B*S, F, T, 2)
        return rearrange(spec, "(b s) f t c -> b (f s) t c", b=b, s=s)

    def _istft(self, spec: torch.Tensor, length: int | None) -> torch.Tensor:
        """complex (B, N, F*S, T) -> (B, N, S, L)."""
        b, n = spec.shape[:2]
        s = self.audio_channels
        spec = rearrange(spec, "b n (f s) t -> (b n s) f t", s=s)
        if self.zero_dc:
            spec = spec.clone()
            spec[:, 0] = 0
        with torch.autocast(device_type=spec.device.type, enabled=False):
            audio = torch.istft(
                spec, n_fft=self.stft_n_fft, hop_length=self.stft_hop_length, win_length=self.stft_win_length,
                window=self.stft_window.float(), normalized=self.stft_normalized, center=True, onesided=True,
                length=length,
            )
        return rearrange(audio, "(b n s) l -> b n s l", b=b, n=n, s=s)

    def _transform(self, x: torch.Tensor) -> torch.Tensor:
        """The (time, freq) transformer stack on (B, T, K, D)."""
        store: list[torch.Tensor] = []
        b, t, k, d = x.shape
        for blocks in self.layers:
            if len(blocks) == 3:
                linear, time_t, freq_t = blocks
                x = linear(x.reshape(b, t * k, d)).reshape(b, t, k, d)
            else:
                time_t, freq_t = blocks
            if self.skip_connection:
                for prev in store:
                    x = x + prev
            x = rearrange(x, "b t k d -> (b k) t d")
            x = time_t(x)
            x = rearrange(x, "(b k) t d -> (b t) k d", b=b)
            x = freq_t(x)
            x = x.reshape(b, t, k, d)
            if self.skip_connection:
                store.append(x)
        if hasattr(self, "final_norm"):
            x = self.final_norm(x)
        return x

    # ------------------------------------------------------------------ subclass hooks
    def _gather(self, packed_stft: torch.Tensor) -> torch.Tensor:
        return packed_stft

    def _spread_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Real masks (B, N, rows, T, 2) -> (B, N, F*S, T, 2) on the packed STFT rows."""
        return masks

    def _output_length(self, length: int) -> int | None:
        return length

    # ------------------------------------------------------------------ forward
    def forward(self, raw_audio: torch.Tensor) -> torch.Tensor:
        """(B, S, L) or (B, L) float audio -> (B, num_stems, S, L') separated stems (always 4-D)."""
        if raw_audio.ndim == 2:
            raw_audio = raw_audio.unsqueeze(1)
        return self.synthesis(self.core(self.analysis(raw_audio)), raw_audio.shape[-1])

    def analysis(self, raw_audio: torch.Tensor) -> torch.Tensor:
        """(B, S, L) audio -> the packed real STFT (B, F*S, T, 2) the core takes."""
        if raw_audio.ndim != 3 or raw_audio.shape[1] != self.audio_channels:
            raise ValueError(
                f"expected audio of shape (batch, {self.audio_channels}, samples), got {tuple(raw_audio.shape)}"
            )
        return self._stft(raw_audio)

    def synthesis(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """The core's masked spectra (B, N, F*S, T) complex -> (B, N, S, L') audio (the iSTFT)."""
        return self._istft(spec, self._output_length(length))

    def core(self, packed_stft: torch.Tensor) -> torch.Tensor:
        """Packed STFT (B, F*S, T, 2) -> masked complex spectra (B, N, F*S, T): everything between the
        STFT and the iSTFT, with fixed shapes and no host synchronisation (a CUDA graph can capture it)."""
        b = packed_stft.shape[0]
        x = self._gather(packed_stft)
        t = x.shape[2]
        x = rearrange(x, "b f t c -> b t (f c)")
        packed = self.packed_weights()
        x = self._band_split(x, packed)                                              # (K, BT, D)
        x = rearrange(x, "k (b t) d -> b t k d", b=b)
        x = self._transform(x)
        xk = rearrange(x, "b t k d -> k (b t) d").contiguous()
        masks = torch.stack([self._mask(xk, n, packed) for n in range(self.num_stems)], dim=0)
        masks = rearrange(masks.float(), "n (b t) (f c) -> b n f t c", b=b, t=t, c=2)
        masks = torch.view_as_complex(self._spread_masks(masks).contiguous())       # (B, N, F*S, T)
        stft_c = torch.view_as_complex(packed_stft.contiguous()).unsqueeze(1)        # (B, 1, F*S, T)
        return stft_c * masks


class BSRoformer(_RoformerBase):
    """Band-split RoFormer (MSST ``bs_roformer``)."""

    def __init__(self, dim: int, *, depth: int, freqs_per_bands: Sequence[int] | None = None,
                 mask_estimator_depth: int = 2, **kwargs: Any):
        n_fft = kwargs.get("stft_n_fft", 2048)
        bands = tuple(freqs_per_bands) if freqs_per_bands is not None else DEFAULT_FREQS_PER_BANDS
        if sum(bands) != n_fft // 2 + 1:
            raise ValueError(f"freqs_per_bands sums to {sum(bands)}, expected {n_fft // 2 + 1} for n_fft={n_fft}")
        self.freqs_per_bands = bands
        super().__init__(dim=dim, depth=depth, band_widths=bands, mask_linears=mask_estimator_depth,
                         norm_output=False, **kwargs)


class MelBandRoformer(_RoformerBase):
    """Mel-band RoFormer (MSST ``mel_band_roformer``): overlapping bands from a mel filterbank."""

    is_mel = True

    def __init__(self, dim: int, *, depth: int, num_bands: int = 60, sample_rate: int = 44100,
                 mask_estimator_depth: int = 1, match_input_audio_length: bool = False, **kwargs: Any):
        n_fft = kwargs.get("stft_n_fft", 2048)
        bands = MelBands(sample_rate, n_fft, num_bands)
        self.match_input_audio_length = match_input_audio_length
        super().__init__(dim=dim, depth=depth, band_widths=tuple(int(n) for n in bands.num_freqs_per_band),
                         mask_linears=mask_estimator_depth + 1, norm_output=True, **kwargs)
        rows = bands.stereo_rows(self.audio_channels)
        self.register_buffer("freq_indices", torch.from_numpy(rows), persistent=False)
        denom = torch.from_numpy(bands.num_bands_per_freq).repeat_interleave(self.audio_channels)
        self.register_buffer("num_bands_per_row", denom.float().clamp(min=1e-8), persistent=False)

    def _gather(self, packed_stft: torch.Tensor) -> torch.Tensor:
        return packed_stft.index_select(1, self.freq_indices)

    def _spread_masks(self, masks: torch.Tensor) -> torch.Tensor:
        """Sum the overlapping bands' masks into each STFT row, then average by bands per row."""
        b, n, _, t, c = masks.shape
        summed = masks.new_zeros(b, n, self.num_bands_per_row.shape[0], t, c)
        index = self.freq_indices.view(1, 1, -1, 1, 1).expand(b, n, -1, t, c)
        summed.scatter_add_(2, index, masks)
        return summed / self.num_bands_per_row.view(1, 1, -1, 1, 1)

    def _output_length(self, length: int) -> int | None:
        return length if self.match_input_audio_length else None


def model_class(model_type: str) -> type[_RoformerBase]:
    return {"bs_roformer": BSRoformer, "mel_band_roformer": MelBandRoformer}[model_type]
