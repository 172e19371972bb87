"""Running a model: device and precision rules, loading a model in one call, the per-window runner that
the stream worker calls, CUDA graphs for fixed-shape windows, MSST's chunk weights, offline ``demix``
(+TTA) and file separation."""
