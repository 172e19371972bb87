"""MIDI controllers as control surfaces of the model (:mod:`bridge.control.model`): ports and backends
(:mod:`.ports`), mapping files (:mod:`.mapping`), what a message does (:mod:`.interpret`) and the surface
with its threads, feedback and learn (:mod:`.surface`). The shipped default mapping is the Korg
nanoKONTROL2's factory scene (``maps/nanokontrol2.yaml``, :data:`DEFAULT_MAP`)."""
from __future__ import annotations

import os

DEFAULT_MAP = os.path.join(os.path.dirname(os.path.abspath(__file__)), "maps", "nanokontrol2.yaml")
