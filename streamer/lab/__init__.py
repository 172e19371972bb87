"""Lab tooling: generated songs and test signals, training, metrics, evaluation and benchmarks.

Never imported by runtime code (``streamer.models``, ``msst``, ``inference``, ``stream``, ``bridge``'s
audio path); only the command line's demo, lab and benchmark commands and the tests use it.
"""
