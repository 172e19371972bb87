"""The real-time streaming engine: settings (presets, validation, the latency formula), the shared ring
and its slot layout, numba audio-side kernels, overlap-add, the inference worker, where it runs
(inline, thread, process), and ``StreamEngine``, the facade over all of them."""
