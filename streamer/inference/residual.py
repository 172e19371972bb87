"""Stems that add up to the input: the residual, given to one stem or spread over all of them.

A separation model's stems seldom sum exactly to its input: what it leaves out (the residual, input
minus the stems' sum) is music too. Two ways to put it back, so that the stems always sum to the
input (with every stem at unity the output is the original, whatever the model missed):

* a **residual stem** (index >= 0): that stem is the input minus the other stems, as MSST users know
  it ("instrumental = mix - vocals"); the model's own output for that stem is not used;
* **spread** (:data:`SPREAD`, index :data:`SPREAD_INDEX`): every stem gets an equal share of the
  residual, the mixture-consistency projection of Wisdom et al. (2019) with equal weights. On the demo
  model it scores better than either the model's raw stems or a residual "other" on generated and on
  real music (model card), because the masks under-estimate every source a little.

Offline (``demix`` output) and in the stream engine's overlap-add the same function applies it.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from ..errors import SettingsError

SPREAD = "spread"   # the residual name that spreads the residual over all stems
SPREAD_INDEX = -2   # its index where a stem index is expected (-1: no residual)
NO_RESIDUAL = -1


def default_residual(model_stems: Sequence[str]) -> str:
    """The residual a live separator uses unless told otherwise: :data:`SPREAD` for a multi-stem model, a
    residual stem named ``"other"`` for a single-target one (muting its stem plays the rest of the mix)."""
    return SPREAD if len(model_stems) > 1 else "other"


def output_stems(model_stems: Sequence[str], residual: str | None) -> tuple[list[str], int]:
    """The stems out and the residual's index for ``residual``: None (index -1, the model's stems as
    they are), :data:`SPREAD` in any case (index -2, the model's stems, each with a share of the
    residual), or a stem name (that stem's index; a name the model does not output is added as an extra
    stem). A single-target model's own stem is refused, as is spreading over it: that stem would
    become the whole input."""
    stems = list(model_stems)
    if residual is None:
        return stems, NO_RESIDUAL
    if len(stems) == 1 and residual == stems[0]:
        raise SettingsError(f"residual {residual!r} is the model's only stem: it would become the whole input; name "
                            "another stem for the rest of the mix (say 'other')")
    if residual.lower() == SPREAD:
        if SPREAD in stems:
            raise SettingsError(f"the model has a stem named {SPREAD!r}, which is also the name of the residual "
                                "mode that spreads the residual over all stems: rename the stem in the config")
        if len(stems) == 1:
            raise SettingsError(f"residual {SPREAD!r} needs a model with more than one stem: this model outputs only "
                                f"{stems[0]!r}, which would become the whole input; name a residual stem instead "
                                "(say 'other': the rest of the mix)")
        return stems, SPREAD_INDEX
    if residual not in stems:
        stems.append(residual)
    return stems, stems.index(residual)


def model_residual_index(model_stems: Sequence[str], residual: str | None) -> int:
    """The index of ``residual`` where no extra stem can be made (offline files, evaluation): None, "spread"
    or one of the model's own stems; another name is refused with a SettingsError."""
    stems, index = output_stems(model_stems, residual)
    if len(stems) != len(model_stems):
        raise SettingsError(f"residual {residual!r} is not one of the model's stems ({', '.join(model_stems)}): "
                            f"use {SPREAD!r} or a stem's name (for separated files, --instrumental writes the mix "
                            "minus the vocals as an extra file)")
    return index


def apply_residual(stems: np.ndarray, mix: np.ndarray, index: int) -> np.ndarray:
    """Make ``stems`` (stems, channels, n) sum to ``mix`` (channels, n), in place, and return it.

    ``index`` >= 0: that stem becomes ``mix`` minus the others; :data:`SPREAD_INDEX`: each stem gets
    1/stems of ``mix`` minus their sum; -1: nothing changes."""
    if index == NO_RESIDUAL:
        return stems
    if index >= 0:
        others = [s for s in range(stems.shape[0]) if s != index]
        stems[index] = mix - stems[others].sum(axis=0)
    elif index == SPREAD_INDEX:
        left = mix - stems.sum(axis=0)
        stems += (left * np.float32(1.0 / stems.shape[0]))[None].astype(stems.dtype, copy=False)
    else:
        raise SettingsError(f"residual index must be >= -2, got {index}")
    return stems
