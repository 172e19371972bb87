"""Which stems a separator has: the model's, plus the residual stem.

The separator's default residual is ``"other"``: the stem that takes the mix minus the other stems,
so muting one stem removes only that stem. A model without a stem named ``other`` gets no residual
by default; any other name given explicitly becomes an extra stem (see
``streamer.stream.settings.output_stems``).
"""
from __future__ import annotations

from typing import Sequence

from streamer.stream.settings import output_stems

DEFAULT_RESIDUAL = "other"


def separator_residual(residual: str | None, model_stems: Sequence[str]) -> str | None:
    """The residual stem a separator uses when asked for ``residual``."""
    if residual is not None and residual not in model_stems and residual == DEFAULT_RESIDUAL:
        return None
    return residual


def separator_stems(model_stems: Sequence[str], residual: str | None) -> list[str]:
    """The stems a separator asked for ``residual`` outputs, in order."""
    return output_stems(list(model_stems), separator_residual(residual, model_stems))[0]
