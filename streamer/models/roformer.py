"""BS-RoFormer and Mel-Band RoFormer, numerically equal to MSST's classes and key-compatible with
their checkpoints.

The state_dict keeps the reference layout (one small MLP per band), but the forward pass does not
loop over bands: bands of equal width are run together as batched matmuls (``torch.baddbmm``) on
weights stacked by width group. Those stacks are the per-band parameters' own storage (each
per-band parameter is a view of one row), so they take no extra memory and follow every change to
the parameters (load_state_dict, optimizer steps, in-place edits) without being checked per call;
see ``_RoformerBase.packed_weights`` and ``repack``.
"""
from __future__ import annotations

import math
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from einops import rearrange
from rotary_embedding_torch import RotaryEmbedding
from torch import nn
from torch.utils.dlpack import from_dlpack

from .bands import DEFAULT_FREQS_PER_BANDS, MelBands
from .layers import RMSNorm, Transformer, l2_normalize, mlp


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
        self.inverse_band_order = torch.tensor(inv, dtype=torch.long, device="cpu")
        # input columns of each group, and whether they form one contiguous slice
        self.columns: list[torch.Tensor | slice] = []
        col_order: list[int] = []
        for w, bands in self.groups:
            cols = [c for k in bands for c in range(offsets[k], offsets[k] + w)]
            col_order.extend(cols)
            if cols == list(range(cols[0], cols[-1] + 1)):
                self.columns.append(slice(cols[0], cols[-1] + 1))
            else:
                self.columns.append(torch.tensor(cols, dtype=torch.long, device="cpu"))
        inv_cols = [0] * len(col_order)
        for pos, c in enumerate(col_order):
            inv_cols[c] = pos
        self.column_order_is_identity = col_order == list(range(len(col_order)))
        self.inverse_column_order = torch.tensor(inv_cols, dtype=torch.long, device="cpu")
        self.bands: list[torch.Tensor | slice] = [
            slice(b[0], b[-1] + 1) if b == list(range(b[0], b[-1] + 1))
            else torch.tensor(b, dtype=torch.long, device="cpu")
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


def _own_storage(t: torch.Tensor) -> torch.Tensor:
    """``t`` as a tensor whose storage is exactly its memory (shared, not copied), where it is a view
    of a larger storage and its device speaks DLPack; else ``t`` itself."""
    storage = t.untyped_storage()
    if (t.device.type == "meta" or not t.is_contiguous()
            or (t.data_ptr() == storage.data_ptr() and t.numel() * t.element_size() == storage.nbytes())):
        return t
    try:
        return from_dlpack(t.detach())
    except (RuntimeError, TypeError, BufferError):
        return t


def _repack_after_load(module: "_RoformerBase", incompatible_keys) -> None:
    """load_state_dict copies into the arena in place; with ``assign=True`` it replaces the
    parameters, and the arena is rebuilt around them."""
    params = [[m._parameters[n] for m, n in stack] for stack in module._stack_members()]
    if not module._holds(params):
        module._repack()


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
        with torch.device("meta"):  # no storage yet: the per-band parameters are made in the arena below
            self.band_split = BandSplit(dim, widths)
            self.mask_estimators = nn.ModuleList(
                MaskEstimator(dim, widths, mask_linears, mlp_expansion_factor) for _ in range(num_stems)
            )
        self._groups = _WidthGroups(widths)
        self.register_buffer("stft_window", torch.hann_window(stft_win_length), persistent=False)
        if self.stft_window.device.type != "meta":  # built under a device context (index maps start on the CPU)
            self._groups.to(self.stft_window.device)
        self._arena: torch.Tensor | None = None    # every per-band parameter is a view of it
        self._packed: dict[str, Any] | None = None  # the stacks the batched matmuls take, views of the arena
        self._loose = False                          # per-band parameters of mixed dtype/device: no arena
        self._scales: dict[tuple, torch.Tensor] = {}  # sqrt(band width) per gamma entry, per device and dtype
        self._init_band_parameters()
        self.register_load_state_dict_post_hook(_repack_after_load)

    # ------------------------------------------------------------------ packing
    # The per-band parameters live in one flat tensor per model, the arena: each stack the batched
    # matmuls take (one per width group and layer, see _stack_members) is a slice of it, and each
    # per-band nn.Parameter is a view of its row of a stack (a leaf all the same: the views are set
    # with ``param.data = ...``). The packed weights are therefore no second copy and cannot go stale:
    # in-place edits, optimizer steps and load_state_dict all write into the arena. The Linear
    # weights keep their (out, in) layout (the state_dict is unchanged) and are transposed at use.
    #
    # The arena is rebuilt (once, never per call) after anything that gives the parameters new
    # storage: ``_apply`` (.to(), .half(), share_memory() ...), load_state_dict(assign=True),
    # unpickling and deepcopy (the arena is left out of the pickled state). Replacing a per-band
    # Parameter object by hand (``linear.weight = nn.Parameter(...)``), setting its ``.data``,
    # converting a band submodule alone (``model.band_split.half()`` rather than ``model.half()``) or
    # swapping parameters from outside (torch.func.functional_call) is not seen in eval mode: call
    # :meth:`repack` afterwards (training mode with gradients enabled always reads the parameters).

    def _stack_members(self) -> list[list[tuple[nn.Module, str]]]:
        """The per-band parameters as (module, name), stack by stack in arena order."""
        feats = self.band_split.to_features
        groups = [bands for _, bands in self._groups.groups]
        # the RMSNorm gammas first and side by side: one multiply scales them all (see _band_split)
        stacks: list[list[tuple[nn.Module, str]]] = [[(feats[k][0], "gamma") for k in bands]  # (n, w)
                                                     for bands in groups]
        for bands in groups:
            stacks.append([(feats[k][1], "weight") for k in bands])                 # (n, D, w)
            stacks.append([(feats[k][1], "bias") for k in bands])                   # (n, D)
        for est in self.mask_estimators:
            mlps = [seq[0] for seq in est.to_freqs]
            last = 2 * (est.num_linears - 1)
            for i in range(0, last, 2):  # layers whose shapes do not depend on the band width
                stacks.append([(m[i], "weight") for m in mlps])                     # (K, h, in)
                stacks.append([(m[i], "bias") for m in mlps])                       # (K, h)
            for bands in groups:
                stacks.append([(mlps[k][last], "weight") for k in bands])           # (n, 2w, in)
                stacks.append([(mlps[k][last], "bias") for k in bands])             # (n, 2w)
        return stacks

    def _init_band_parameters(self) -> None:
        """Give the per-band parameters (built on the meta device) their storage, one arena on the
        default device (or the device context's), and initialise them as their modules' constructors
        do, in the same order: the same random numbers as a model built without the arena, and no
        second allocation of the per-band weights."""
        members = self._stack_members()
        shapes = [m._parameters[n].shape for m, n in (stack[0] for stack in members)]
        dtype = members[0][0][0]._parameters[members[0][0][1]].dtype
        arena = torch.empty(sum(len(stack) * shape.numel() for stack, shape in zip(members, shapes)), dtype=dtype)
        offset = 0
        for stack, shape in zip(members, shapes):
            view = arena.narrow(0, offset, len(stack) * shape.numel()).view(len(stack), *shape)
            for i, (m, n) in enumerate(stack):  # (a meta tensor cannot take other data: new Parameters)
                m._parameters[n] = nn.Parameter(view[i], requires_grad=m._parameters[n].requires_grad)
            offset += view.numel()
        with torch.no_grad():
            self._place(arena, [[m._parameters[n] for m, n in stack] for stack in members])
            for module in (*self.band_split.modules(), *self.mask_estimators.modules()):
                if isinstance(module, RMSNorm):
                    nn.init.ones_(module.gamma)
                elif isinstance(module, nn.Linear):
                    module.reset_parameters()

    def _band_parameters(self):
        """Every per-band parameter, in arena order (a walk: never called per forward in eval mode)."""
        for stack in self._stack_members():
            for module, name in stack:
                yield module._parameters[name]

    def _packed_from(self, stacks: Sequence[torch.Tensor], gammas: torch.Tensor) -> dict[str, Any]:
        """The operands of the batched matmuls, as views of the stacks in ``_stack_members`` order;
        ``gammas``: the band split's RMSNorm gammas, all groups' in one flat tensor."""
        it = iter(stacks[len(self._groups.groups):])
        split = [(next(it).transpose(1, 2), next(it).unsqueeze(1)) for _ in self._groups.groups]  # (n,w,D) (n,1,D)
        masks = []
        for est in self.mask_estimators:
            shared = [(next(it).transpose(1, 2), next(it).unsqueeze(1)) for _ in range(est.num_linears - 1)]
            last = [(next(it).transpose(1, 2), next(it).unsqueeze(1)) for _ in self._groups.groups]
            masks.append((shared, last))
        return {"gammas": gammas, "split": split, "masks": masks}

    def _stacked(self) -> dict[str, Any]:
        """Packed weights stacked from the parameters now (differentiable; a copy, made per call)."""
        stacks = [torch.stack([m._parameters[n] for m, n in stack]) for stack in self._stack_members()]
        gammas = torch.cat([g.reshape(-1) for g in stacks[:len(self._groups.groups)]])
        return self._packed_from(stacks, gammas)

    def _gamma_scale(self, gammas: torch.Tensor) -> torch.Tensor:
        """sqrt(width) for each entry of the flat gammas, in the dtype a Python float would multiply
        them in (float32 for fp16/bf16: the same rounding as ``gamma * math.sqrt(w)``), on their
        device. Derived from the band widths alone, so never stale; made once per device and dtype."""
        dtype = torch.float64 if gammas.dtype == torch.float64 else torch.float32
        key = (gammas.device, dtype)
        scale = self._scales.get(key)
        if scale is None:
            with torch.inference_mode(False), torch.no_grad():
                scale = torch.cat([torch.full((len(bands) * w,), math.sqrt(w), dtype=dtype)
                                   for w, bands in self._groups.groups]).to(gammas.device)
            self._scales[key] = scale
        return scale

    def packed_weights(self) -> dict[str, Any]:
        """The per-band weights stacked by width group, as views of the parameters' own storage.

        In training mode with gradients enabled the stacks are built from the parameters on each call
        instead (``torch.stack``, so that gradients flow to every per-band parameter)."""
        if self.training and torch.is_grad_enabled():
            return self._stacked()
        packed = self._packed
        if packed is None:  # after unpickling or deepcopy, or parameters of mixed dtype/device
            if not self._loose:
                self._repack()
            packed = self._packed
            if packed is None:
                with torch.no_grad():
                    return self._stacked()
        return packed

    def repack(self) -> None:
        """Move the per-band parameters back into one arena (a copy only where they are not already
        laid out there). Needed only after a per-band Parameter was replaced or its ``.data`` set by
        hand; ``.to()``, load_state_dict, pickling and deepcopy take care of it themselves."""
        self._repack()

    def _repack(self) -> None:
        params = [[m._parameters[n] for m, n in stack] for stack in self._stack_members()]
        flat = [p for stack in params for p in stack]
        ref = flat[0] if flat else None
        if (ref is None or any(p is None for p in flat)
                or any(p.dtype != ref.dtype or p.device != ref.device for p in flat)
                or any(p.shape != stack[0].shape for stack in params for p in stack)):
            self._arena, self._packed, self._loose = None, None, True  # stacked per call until repacked
            return
        # an arena of the parameters' kind: normal tensors even when repacked under inference_mode, and
        # inference tensors for a model built under inference_mode
        with torch.inference_mode(ref.is_inference()), torch.no_grad():
            arena = self._adopt(params)
            if arena is None:
                arena = torch.cat([p.data.reshape(-1) for p in flat])
            self._place(arena, params)

    @staticmethod
    def _adopt(params: list[list[torch.Tensor]]) -> torch.Tensor | None:
        """The arena as a view of the storage the parameters already share, when they lie in it in
        arena order and contiguous (an unpickled model, a second repack); else None."""
        first = params[0][0]
        try:
            storage = first.untyped_storage()._cdata
            start = offset = first.storage_offset()
            for stack in params:
                numel = stack[0].numel()
                for p in stack:
                    if (p.untyped_storage()._cdata != storage or p.storage_offset() != offset
                            or not p.is_contiguous() or p.is_inference() != first.is_inference()):
                        return None
                    offset += numel
            with torch.inference_mode(first.is_inference()):
                return first.data.as_strided((offset - start,), (1,), start)
        except (RuntimeError, NotImplementedError):
            return None

    def _place(self, arena: torch.Tensor, params: list[list[torch.Tensor]]) -> None:
        """Point every per-band parameter at its row of its stack in ``arena``."""
        stacks = []
        offset = 0
        n_gammas = sum(len(stack) * stack[0].numel() for stack in params[:len(self._groups.groups)])
        with torch.no_grad():
            for stack in params:
                shape, n = stack[0].shape, len(stack)
                numel = stack[0].numel()
                view = arena.narrow(0, offset, n * numel).view(n, *shape)
                for i, p in enumerate(stack):
                    p.data = view[i]
                stacks.append(view)
                offset += n * numel
        self._arena = arena
        self._packed = self._packed_from(stacks, arena.narrow(0, 0, n_gammas))
        self._loose = False

    def _holds(self, params: list[list[torch.Tensor]]) -> bool:
        """Whether the per-band parameters are (still) the views of the current arena."""
        arena = self._arena
        if arena is None or any(p is None for stack in params for p in stack):
            return False
        found = self._adopt(params)
        return (found is not None and found.numel() == arena.numel() and found.dtype == arena.dtype
                and found.storage_offset() == arena.storage_offset()
                and found.untyped_storage()._cdata == arena.untyped_storage()._cdata)

    def _apply(self, fn, recurse=True):
        out = None
        members = self._stack_members() if recurse else []
        params = [[m._parameters[n] for m, n in stack] for stack in members]
        if recurse and not torch.__future__.get_swap_module_params_on_conversion() and self._holds(params):
            # Convert the arena once and point the parameters at it, instead of converting each
            # per-band parameter on its own and packing the results again (twice the memory).
            with torch.no_grad():
                arena = fn(self._arena)
            if (type(arena) is torch.Tensor and arena.shape == self._arena.shape and arena.is_contiguous()
                    and torch._has_compatible_shallow_copy_type(self._arena, arena)):
                owners = {id(m): m for stack in members for m, _ in stack}.values()
                saved = [(m, dict(m._parameters)) for m in owners]
                for m, _ in saved:  # the band modules hold nothing else: hide them from super()._apply
                    m._parameters.clear()
                try:
                    out = super()._apply(fn, recurse)
                finally:
                    for m, kept in saved:
                        m._parameters.update(kept)
                with torch.inference_mode(arena.is_inference()):
                    self._place(arena, params)
                self._apply_to_grads(fn, [p for stack in params for p in stack])
        if out is None:
            out = super()._apply(fn, recurse)
            if recurse:
                self._arena, self._packed = None, None
                self._repack()
        if self.stft_window.device.type != "meta":
            self._groups.to(self.stft_window.device)
        # keep the scales made for the device the model is on now (a live CUDA graph may read them:
        # a second runner's .to(the same device) must not free them); drop the others
        self._scales = {k: v for k, v in self._scales.items() if k[0] == self.stft_window.device}
        return out

    @staticmethod
    def _apply_to_grads(fn, params: list[torch.Tensor]) -> None:
        """What ``nn.Module._apply`` does to the gradients of the parameters it converts."""
        for p in params:
            grad = p.grad
            if grad is None:
                continue
            with torch.no_grad():
                new = fn(grad)
            if torch._has_compatible_shallow_copy_type(grad, new):
                grad.data = new
            else:
                p.grad = new.requires_grad_(grad.requires_grad)

    def state_dict(self, *args, destination=None, prefix="", keep_vars=False):
        """As ``nn.Module.state_dict``; the per-band tensors are returned as tensors of their own
        (sharing memory with the parameters), as they would be without the arena, so that savers
        that refuse a view of a larger storage (safetensors' ``save_model``) keep working and
        ``torch.save`` writes them one by one."""
        out = super().state_dict(*args, destination=destination, prefix=prefix, keep_vars=keep_vars)
        if len(args) > 1:  # the deprecated positional form (destination, prefix, keep_vars)
            prefix = args[1]
        if len(args) > 2:
            keep_vars = args[2]
        if not keep_vars:
            for key in self._band_keys():
                t = out.get(prefix + key)
                if t is not None:
                    out[prefix + key] = _own_storage(t)
        return out

    def _band_keys(self) -> list[str]:
        names = {id(m): path for path, m in self.named_modules()}
        return [f"{names[id(m)]}.{n}" for stack in self._stack_members() for m, n in stack]

    def __getstate__(self):
        # the arena and the packed views are rebuilt from the parameters (at the first forward), so a
        # copy or a skeleton (streamer.stream.share) never carries a second copy of the weights
        state = super().__getstate__() if hasattr(super(), "__getstate__") else self.__dict__
        state = dict(state)
        state["_arena"] = None
        state["_packed"] = None
        state["_loose"] = False
        state["_scales"] = {}
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        self.__dict__.pop("_packed_key", None)  # pickled by an older version
        self.__dict__.setdefault("_arena", None)
        self.__dict__.setdefault("_loose", False)
        self.__dict__.setdefault("_scales", {})
        self._packed = None

    # ------------------------------------------------------------------ pieces
    def _band_split(self, x: torch.Tensor, packed: dict[str, Any]) -> torch.Tensor:
        """(B, T, sum din) -> (K, B*T, D), bands in order."""
        g = self._groups
        rows = x.shape[0] * x.shape[1]
        flat = x.reshape(rows, x.shape[-1])
        outs = []
        # RMSNorm: normalize(x) * sqrt(w) * gamma, the factors multiplied first, all groups at once
        gammas = packed["gammas"]
        scale = self._gamma_scale(gammas)
        gammas = gammas * scale if scale.dtype == gammas.dtype else (gammas.to(scale.dtype) * scale).to(gammas.dtype)
        offset = 0
        for (w, bands), cols, (weight, bias) in zip(g.groups, g.columns, packed["split"]):
            n = len(bands)
            xg = _take(flat, cols, dim=1)
            xg = xg.reshape(rows, n, w).transpose(0, 1)                                # (n, BT, w)
            xg = l2_normalize(xg) * gammas.narrow(0, offset, n * w).view(n, 1, w)
            offset += n * w
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

    def _spread_masks(self, masks: torch.Tensor, dim: int = 2) -> torch.Tensor:
        """Real masks (B, N, rows, T, 2) -> (B, N, F*S, T, 2) on the packed STFT rows (the rows on
        axis ``dim``: the ONNX core keeps them on axis 3, time-major)."""
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

    def _spread_masks(self, masks: torch.Tensor, dim: int = 2) -> torch.Tensor:
        """Sum the overlapping bands' masks into each STFT row, then average by bands per row (the
        rows on axis ``dim`` of a 5-D tensor)."""
        shape = list(masks.shape)
        shape[dim] = self.num_bands_per_row.shape[0]
        summed = masks.new_zeros(shape)
        along = [1] * masks.ndim
        along[dim] = -1
        index = self.freq_indices.view(along).expand(*masks.shape)
        summed.scatter_add_(dim, index, masks)
        return summed / self.num_bands_per_row.view(along)

    def _output_length(self, length: int) -> int | None:
        return length if self.match_input_audio_length else None


def model_class(model_type: str) -> type[_RoformerBase]:
    return {"bs_roformer": BSRoformer, "mel_band_roformer": MelBandRoformer}[model_type]
