"""Handing a model to a worker process as one block of shared memory per dtype.

Pickling a module for a spawned process shares every parameter and buffer on its own (one file
descriptor each, and a pickle that grows with the number of tensors): the demo model alone has
1,221 parameters, more than a desktop's default ``ulimit -n 1024``. Here the weights are copied once
into one flat shared tensor per dtype and the module travels as a skeleton without tensors; the
worker rebuilds it with views into the shared blocks. The descriptors used no longer grow with the
number of tensors.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn


@dataclass
class SharedModel:
    """A module skeleton (its parameters and buffers set to None) and the shared blocks they live in."""

    skeleton: nn.Module
    blocks: dict[str, torch.Tensor]                              # dtype name -> flat shared tensor
    tensors: list[tuple[str, int, tuple[int, ...], bool]]       # (dtype name, offset, shape, is parameter)
    slots: list[tuple[str, str, str, int]]                       # (module path, name, "p" or "b", tensor index)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def _storage_order(tensors: list[torch.Tensor]) -> list[int]:
    """The tensors' indices with the ones that share a storage together, in their order in it.

    A Roformer keeps its per-band weights as views of one arena (``packed_weights``); copied into the
    block in arena order they are again one contiguous run there, which the worker's model adopts as
    its arena without copying (it would otherwise pack a private copy of the band weights: up to half
    the model again in every worker)."""
    first_seen: dict[int, int] = {}
    keys = []
    for i, t in enumerate(tensors):
        try:
            storage = t.untyped_storage().data_ptr()
            offset = t.storage_offset()
        except (RuntimeError, NotImplementedError):  # tensors without a plain storage keep their place
            storage, offset = -1 - i, 0
        keys.append((first_seen.setdefault(storage, i), offset, i))
    return [i for _, _, i in sorted(keys)]


def share_model(model):
    """A picklable stand-in for ``model``: a :class:`SharedModel` for an ``nn.Module``, the object
    itself for any other callable."""
    if not isinstance(model, nn.Module):
        return model
    unique: dict[int, int] = {}
    tensors: list[torch.Tensor] = []
    slots: list[tuple[str, str, str, int]] = []
    for path, module in model.named_modules(remove_duplicate=False):
        for kind, table in (("p", module._parameters), ("b", module._buffers)):
            for name, t in table.items():
                if t is None:
                    continue
                if id(t) not in unique:
                    unique[id(t)] = len(tensors)
                    tensors.append(t)
                slots.append((path, name, kind, unique[id(t)]))
    slots = list(dict.fromkeys(slots))  # a module reached twice lists its slots once
    by_dtype: dict[str, list[torch.Tensor]] = {}
    layout: list = [None] * len(tensors)
    offsets: dict[str, int] = {}
    for i in _storage_order(tensors):
        t = tensors[i]
        key = _dtype_name(t.dtype)
        layout[i] = (key, offsets.get(key, 0), tuple(t.shape), isinstance(t, nn.Parameter))
        offsets[key] = offsets.get(key, 0) + t.numel()
        by_dtype.setdefault(key, []).append(t.detach().reshape(-1).cpu())
    blocks = {key: torch.cat(parts).share_memory_() for key, parts in by_dtype.items()}
    skeleton = copy.deepcopy(model, memo={id(t): None for t in tensors})
    return SharedModel(skeleton, blocks, layout, slots)


def unshare_model(shared):
    """The module back from :func:`share_model`'s stand-in (its tensors are views of the shared blocks)."""
    if not isinstance(shared, SharedModel):
        return shared
    views = []
    for key, offset, shape, is_param in shared.tensors:
        numel = 1
        for n in shape:
            numel *= n
        view = shared.blocks[key][offset:offset + numel].view(shape)
        views.append(nn.Parameter(view, requires_grad=False) if is_param else view)
    model = shared.skeleton
    for path, name, kind, index in shared.slots:
        module = model.get_submodule(path) if path else model
        (module._parameters if kind == "p" else module._buffers)[name] = views[index]
    return model
