"""Separating whole libraries on a Ray cluster (``stemstream separate --ray``): the job
(:mod:`streamer.cluster.job`, which imports Ray: load it only for a cluster job) and its manifest
(:mod:`streamer.cluster.manifest`, no Ray)."""
from __future__ import annotations


def ray_available() -> bool:
    """Whether Ray can be imported (the ``cluster`` extra: ``pip install 'stemstream[cluster]'``)."""
    import importlib.util

    try:
        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False
