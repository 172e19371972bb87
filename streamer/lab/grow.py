"""Starting a deeper Roformer from a trained shallower one ("growing" by depth).

A model of ``depth`` N + M takes the N trained (time, freq) layers, band split, mask estimators and
final norm of a depth-N checkpoint of the same family and width; its M new layers keep their random
initialisation except the last projection of every residual branch (attention's ``to_out``, the
feed-forward's second Linear), which is set to zero. Each new branch then adds nothing: the grown
model's output equals the small model's exactly, and training continues from there instead of from
scratch (the zeroed projections receive gradients from the first step, so the new layers learn).

This holds where the layers add their branches to a residual stream with no norm at each
transformer's output: BS-RoFormer (one final norm after all layers). Mel-Band RoFormer normalises
the output of every transformer, so a new layer could not start as the identity; it is refused.
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import CheckpointError
from ..models.layers import Attention, FeedForward, LinearAttention, Transformer
from ..msst.checkpoint import read_state_dict

_LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass
class Grown:
    """What :func:`grow_from` did: the checkpoint's depth, the model's, and the new layers' indices."""

    from_depth: int
    to_depth: int

    @property
    def new_layers(self) -> list[int]:
        return list(range(self.from_depth, self.to_depth))


def _depth(keys) -> int:
    found = [int(m.group(1)) for k in keys if (m := _LAYER.match(k))]
    return max(found) + 1 if found else 0


def _zero_branches(layer: nn.Module) -> None:
    """Zero the last projection of every residual branch in ``layer``."""
    for module in layer.modules():
        if isinstance(module, Attention):
            nn.init.zeros_(module.to_out[0].weight)
        elif isinstance(module, LinearAttention):
            nn.init.zeros_(module.to_out[1].weight)
        elif isinstance(module, FeedForward):
            last = module.net[4]
            nn.init.zeros_(last.weight)
            if last.bias is not None:
                nn.init.zeros_(last.bias)


def grow_from(model: nn.Module, path: str | os.PathLike, trust: bool = False) -> Grown:
    """Load the shallower checkpoint ``path`` into ``model`` (deeper, same family and width) as
    described in the module docstring; raises CheckpointError naming what does not fit."""
    where = os.fspath(path)
    layers = getattr(model, "layers", None)
    if not isinstance(layers, nn.ModuleList) or not hasattr(model, "final_norm"):
        raise CheckpointError(f"{where}: growing by depth needs a BS-RoFormer (a model whose layers have no "
                              f"per-transformer output norm); {type(model).__name__} normalises each "
                              f"transformer's output, so a new layer cannot start as the identity")
    for module in layers.modules():
        if isinstance(module, Transformer) and not isinstance(module.norm, nn.Identity):
            raise CheckpointError(f"{where}: this model normalises each transformer's output; "
                                  f"a new layer cannot start as the identity")
    sd = read_state_dict(where, trust=trust)
    expected = model.state_dict()
    small, big = _depth(sd), len(layers)
    if small == 0:
        raise CheckpointError(f"{where}: no transformer layers (layers.N.*) in the checkpoint")
    if small >= big:
        raise CheckpointError(f"{where}: the checkpoint has {small} layers and the model {big}: growing needs "
                              f"a deeper model (for the same depth use --init without --grow)")
    unexpected = [k for k in sd if k not in expected]
    shapes = [f"{k}: checkpoint {tuple(sd[k].shape)} vs model {tuple(expected[k].shape)}"
              for k in sd if k in expected and sd[k].shape != expected[k].shape]
    missing = [k for k in expected if k not in sd and not ((m := _LAYER.match(k)) and int(m.group(1)) >= small)
               and not k.endswith("rotary_embed.freqs")]
    problems = []
    if shapes:
        problems.append(f"{len(shapes)} shapes differ (another width or band layout?), e.g. {shapes[0]}")
    if unexpected:
        problems.append(f"{len(unexpected)} keys the model lacks, e.g. {unexpected[0]}")
    if missing:
        problems.append(f"{len(missing)} keys outside the new layers are missing, e.g. {missing[0]}")
    if problems:
        raise CheckpointError(f"{where} cannot seed this model: " + "; ".join(problems))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not torch.isfinite(v).all()]
    if bad:
        raise CheckpointError(f"{where}: {len(bad)} tensors hold NaN/inf values, e.g. {bad[0]}")
    with torch.no_grad():
        state = dict(expected)
        state.update({k: v.to(expected[k].dtype) for k, v in sd.items()})
        # the rotary frequencies are one tensor shared by all time (and all freq) attentions: the new
        # layers' keys must carry the checkpoint's values too (they may be fp16-rounded there)
        for k in state:
            if k not in sd and k.endswith("rotary_embed.freqs"):
                twin = _LAYER.sub("layers.0.", k)
                if twin in sd:
                    state[k] = sd[twin].to(expected[k].dtype)
        model.load_state_dict(state, strict=True)
        for i in range(small, big):
            _zero_branches(layers[i])
    for module in model.modules():  # as load_checkpoint: cached rotary angles must follow the loaded freqs
        if hasattr(module, "cached_freqs_seq_len"):
            module.cached_freqs_seq_len = 0
    return Grown(small, big)
