"""CUDA paths: these run only where a GPU is present (skipped cleanly elsewhere, as in CI)."""
import numpy as np
import pytest
import torch

import streamer
from streamer import StreamEngine
from streamer.inference.graphs import error_db
from streamer.inference.precision import agreement_db

from conftest import randomize, write_yaml

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


@pytest.fixture
def model_and_config(tmp_path):
    cfg = streamer.load_config(write_yaml(tmp_path / "m.yaml", stems=("vocals", "drums", "bass", "other"),
                                          target=None, extra_model={"num_stems": 4}, chunk_size=22050))
    torch.manual_seed(0)
    return randomize(streamer.build_model(cfg)), cfg


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_cuda_engine_matches_cpu_fp32_within_precision(model_and_config, precision):
    model, cfg = model_and_config
    audio = (np.random.default_rng(0).standard_normal((2, 44100 * 2)) * 0.2).astype(np.float32)
    settings = dict(window=22050, hop=5512, lookahead=5512)
    cpu = StreamEngine(model, cfg.stems, 44100, **settings)
    ref = np.concatenate([cpu.process(audio), cpu.flush()], axis=-1)
    gpu = StreamEngine(model, cfg.stems, 44100, device="cuda", precision=precision, **settings)
    assert gpu.device.type == "cuda" and gpu.precision == precision
    out = np.concatenate([gpu.process(audio), gpu.flush()], axis=-1)
    db = error_db(torch.from_numpy(out), torch.from_numpy(ref))
    assert db <= agreement_db(precision), f"{precision} differs from CPU fp32 by {db:.1f} dB"


def test_cuda_realtime_process_worker(model_and_config):
    model, cfg = model_and_config
    with StreamEngine(model.cpu(), cfg.stems, 44100, window=22050, hop=5512, lookahead=5512, residual="other",
                      device="cuda", realtime=True, worker="process") as engine:
        out = np.concatenate([engine.process(np.zeros((2, 512), np.float32)) for _ in range(200)], axis=-1)
        assert engine.stats["error"] is None
    assert np.isfinite(out).all()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_cuda_graph_engine_and_demix_match_eager(model_and_config, precision):
    model, cfg = model_and_config
    model = model.cuda()
    audio = (np.random.default_rng(1).standard_normal((2, 44100 * 2)) * 0.2).astype(np.float32)
    settings = dict(window=22050, hop=5512, lookahead=5512, device="cuda", precision=precision)
    eager = StreamEngine(model, cfg.stems, 44100, cuda_graph=False, **settings).separate(audio, 512)
    graphed_engine = StreamEngine(model, cfg.stems, 44100, cuda_graph=True, **settings)
    assert graphed_engine._host.worker.runner.graphed
    graphed = graphed_engine.separate(audio, 512)
    tol = 1e-5 if precision == "fp32" else 1e-2
    assert np.linalg.norm(graphed - eager) / np.linalg.norm(eager) < tol
    ref = streamer.demix(model, audio, 22050, 2, batch_size=2, precision=precision, cuda_graph=False)
    got = streamer.demix(model, audio, 22050, 2, batch_size=2, precision=precision, cuda_graph=True)
    assert np.linalg.norm(got - ref) / np.linalg.norm(ref) < tol
