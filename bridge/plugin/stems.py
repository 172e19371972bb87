"""Which stems a separator has: the model's, plus the residual stem.

The residual stem takes the mix minus the model's other stems, so muting one stem removes only that
stem. The rule (``residual`` is what the separator or the rig's ``engine.residual`` was given):

* ``None`` (rig: ``null``): no residual stem.
* A name the model outputs (``"other"`` for a four-stem model): that stem becomes the residual.
* A **single-target** model (``training.target_instrument``, one output) always gets its residual, by
  default named ``"other"``: a vocals-only model has the stems ``vocals`` and ``other``, so muting the
  vocals plays the rest of the mix (not silence).
* A multi-stem model without a stem of that name gets it as an extra stem when the name was given
  explicitly (``residual="other"``, ``residual="rest"``), and no residual when nothing was given (the
  default, :data:`DEFAULT_RESIDUAL`): its stems are left as the model made them unless asked.
"""
from __future__ import annotations

from typing import Sequence

from streamer.errors import SettingsError
from streamer.stream.settings import output_stems


class _DefaultResidual(str):
    """The string ``"other"`` as the default residual, told apart (by identity) from an explicit ``"other"``."""

    def __repr__(self) -> str:
        return "'other'"


DEFAULT_RESIDUAL = _DefaultResidual("other")


def separator_residual(residual: str | None, model_stems: Sequence[str]) -> str | None:
    """The residual stem a separator uses when asked for ``residual`` (see the module docstring)."""
    if residual is None:
        return None
    if not isinstance(residual, str) or not residual:
        raise SettingsError(f"residual must be a stem name (a non-empty string) or None, got {residual!r}")
    name = str(residual)
    if name in model_stems or len(model_stems) == 1:
        return name
    if residual is DEFAULT_RESIDUAL:
        return None  # a multi-stem model without "other": no residual unless one is asked for
    return name


def separator_stems(model_stems: Sequence[str], residual: str | None) -> list[str]:
    """The stems a separator asked for ``residual`` outputs, in order."""
    return output_stems(list(model_stems), separator_residual(residual, model_stems))[0]
