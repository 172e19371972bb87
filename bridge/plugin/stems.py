"""Which stems a separator has, and how they are made to sum to the input.

A model's stems seldom sum exactly to its input; the separator puts what they miss (the residual)
back, so that with every stem at unity the output is the original and muting a stem removes that
stem (see ``streamer.inference.residual``). The rule (``residual`` is what the separator or the rig's
``engine.residual`` was given):

* Nothing given (the default, :data:`DEFAULT_RESIDUAL`): a multi-stem model spreads the residual
  equally over its stems (``"spread"``; on the demo model this scores better than the raw stems or a
  residual ``other``, model card); a **single-target** model (``training.target_instrument``, one
  output) gets a residual stem named ``"other"``: a vocals-only model has the stems ``vocals`` and
  ``other``, so muting the vocals plays the rest of the mix (not silence).
* ``"spread"``: the residual spread over the stems (refused for a single-target model: its one stem
  would become the whole input).
* A stem name the model outputs (``"other"`` for a four-stem model): that stem becomes the input
  minus the others (the model's own output for it is not used).
* Another name (``"rest"``): an extra stem holding the residual (a single-target model's residual
  stem gets that name).
* ``None`` (rig: ``null``): the model's stems as they are; they need not sum to the input.
"""
from __future__ import annotations

from typing import Sequence

from streamer.errors import SettingsError
from streamer.inference.residual import SPREAD, default_residual, output_stems


class _DefaultResidual(str):
    """The default residual, told apart (by identity) from an explicit ``"other"``: the residual spread over a
    multi-stem model's stems, a residual stem named ``"other"`` for a single-target model."""

    def __repr__(self) -> str:
        return "<default: 'spread', 'other' for a single-target model>"


DEFAULT_RESIDUAL = _DefaultResidual("other")


def separator_residual(residual: str | None, model_stems: Sequence[str]) -> str | None:
    """The residual a separator uses when asked for ``residual`` (see the module docstring)."""
    if residual is None:
        return None
    if not isinstance(residual, str) or not residual:
        raise SettingsError(f"residual must be a stem name, {SPREAD!r} or None, got {residual!r}")
    if isinstance(residual, _DefaultResidual):  # by type: a copy of the default is still the default
        return default_residual(model_stems)
    return str(residual)


def separator_stems(model_stems: Sequence[str], residual: str | None) -> list[str]:
    """The stems a separator asked for ``residual`` outputs, in order."""
    return output_stems(list(model_stems), separator_residual(residual, model_stems))[0]
