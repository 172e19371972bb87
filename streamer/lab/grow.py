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
from ..msst.checkpoint import fill_shared_keys, load_state, read_state_dict

_LAYER = re.compile(r"^layers\.(\d+)\.")


@dataclass
class Grown:
    """What :func:`grow_from` did: the checkpoint's depth, the model's, and the new layers' indices."""

    from_depth: int
    to_depth: int

    @property
    def new_layers(self) -> list[int]:
        return list(range(self.from_depth, self.to_depth))


def depth_of(state_dict) -> int:
    """The number of (time, freq) layers of a Roformer state dict (0 if it has none)."""
    found = [int(m.group(1)) for k in state_dict if (m := _LAYER.match(k))]
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
    small, big = depth_of(sd), len(layers)
    if small == 0:
        raise CheckpointError(f"{where}: no transformer layers (layers.N.*) in the checkpoint")
    if small >= big:
        raise CheckpointError(f"{where}: the checkpoint has {small} layers and the model {big}: growing needs "
                              f"a deeper model (for the same depth use --init without --grow)")
    # the new layers keep the model's own initialisation, except the rotary frequencies: one tensor
    # shared by all time (and all freq) attentions, which fill_shared_keys takes from the checkpoint
    state = {k: v for k, v in model.state_dict().items()
             if (m := _LAYER.match(k)) and int(m.group(1)) >= small and not k.endswith("rotary_embed.freqs")}
    state.update(sd)
    with torch.no_grad():
        load_state(model, fill_shared_keys(model, state), f"{where} (growing {small} -> {big} layers)")
        for i in range(small, big):
            _zero_branches(layers[i])
    return Grown(small, big)
