"""stemstream's user side: everything facing a user or another program.

* ``bridge.plugin``: ``StemSeparator`` (pedalboard's plugin contract), ``Chain``, the channel-layout
  rule, rig files;
* ``bridge.mix``: the stem mixer (buses, fader law, mute/solo, meters) and per-stem effect chains;
* ``bridge.cli``: the ``stemstream`` command.

Imports run one way: ``bridge`` uses ``streamer``, never the reverse.
"""
from .mix.mixer import StemMixer
from .plugin.chain import Chain
from .plugin.separator import StemSeparator

__all__ = ["Chain", "StemMixer", "StemSeparator"]
