"""Files shipped inside the package: the embedded demo model and the example song it separates.

Found through the package itself, so ``stemstream demo`` works from an installed package as well as
from the repository:

* ``demo/``: ``demo_bs_roformer_64x2.yaml`` (MSST config), ``.ckpt`` (fp16 weights) and ``MODEL_CARD.md``;
* ``song/``: a generated 10 s song, one FLAC per stem (vocals, drums, bass, other) and ``song.json``.
"""
from __future__ import annotations

from importlib import resources

_ROOT = resources.files(__name__)

DEMO_CONFIG = str(_ROOT / "demo" / "demo_bs_roformer_64x2.yaml")
DEMO_CHECKPOINT = str(_ROOT / "demo" / "demo_bs_roformer_64x2.ckpt")
DEMO_SONG = str(_ROOT / "song")
DEMO_STEMS = ("vocals", "drums", "bass", "other")
