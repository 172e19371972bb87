"""Mixing separated stems: the stem mixer (gains, fader law, mute, solo, buses, meters) and per-stem
effect chains on fixed blocks with latency compensation."""
