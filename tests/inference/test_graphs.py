"""CUDA graph plumbing that can be checked without a GPU (the GPU half is in tests/stream/test_gpu.py)."""
import numpy as np
import torch

import streamer
from streamer.inference.graphs import DEFAULT_CUDA_GRAPH, capture, error_db, has_core, use_cuda_graph

from conftest import randomize, write_yaml
from standins import ContextModel


def test_graphs_only_on_cuda_and_default_off_until_measured():
    assert DEFAULT_CUDA_GRAPH is False
    assert not use_cuda_graph(True, torch.device("cpu"))
    assert not use_cuda_graph(None, torch.device("cpu"))
    assert use_cuda_graph(True, torch.device("cuda")) and not use_cuda_graph(False, torch.device("cuda"))
    assert capture(ContextModel(), (1, 2, 100), torch.device("cpu"), "fp32") is None


def test_the_model_core_split_is_the_forward_pass(tmp_path):
    config = streamer.load_config(write_yaml(tmp_path / "m.yaml"))
    torch.manual_seed(0)
    model = randomize(streamer.build_model(config))
    assert has_core(model) and not has_core(ContextModel())
    x = torch.randn(2, 2, 8820) * 0.1
    with torch.inference_mode():
        split = model.synthesis(model.core(model.analysis(x)), x.shape[-1])
        assert torch.equal(split, model(x))


def test_error_db():
    ref = torch.ones(100, dtype=torch.float64)
    assert error_db(ref, ref) == float("-inf")
    assert abs(error_db(ref * 1.1, ref) - 10 * np.log10(0.01)) < 1e-9


def test_engine_asked_for_graphs_on_cpu_runs_eagerly(tmp_path):
    engine = streamer.StreamEngine(ContextModel(), ["a", "b", "c"], 44100, window=1000, hop=250, lookahead=250,
                                   cuda_graph=True)
    out = engine.process(np.zeros((2, 600), np.float32))
    assert out.shape == (3, 2, 600) and engine.stats["cuda_graph"] is False
