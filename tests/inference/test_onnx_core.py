"""The model core as an ONNX Runtime session: equal to torch, cached once per model and window, and
failing cleanly (OnnxUnavailable, nothing half-written) so the caller can fall back to torch."""
import os

import pytest
import torch

import streamer
from streamer.inference import onnx_core
from streamer.inference.onnx_core import (OnnxCore, OnnxUnavailable, cache_dir, cache_key, ort_available,
                                          run_with_onnx)

from conftest import TINY_BS, randomize, write_yaml


def _onnx_importable():
    try:
        import onnx  # noqa: F401
    except Exception:  # noqa: BLE001 - missing or broken: either way the exporter cannot run
        return False
    return True


pytestmark = [
    pytest.mark.skipif(not ort_available(), reason="onnxruntime is not installed (pip install onnxruntime onnx)"),
    pytest.mark.skipif(not _onnx_importable(), reason="the ONNX exporter needs the onnx package (pip install onnx)"),
]

TINY_MEL = {**TINY_BS, "num_bands": 8}
TOL = 1e-5


def build(tmp_path, kind="bs", stereo=True, seed=0):
    model_type = {"bs": "bs_roformer", "mel": "mel_band_roformer"}[kind]
    model = dict(TINY_BS if kind == "bs" else TINY_MEL, stereo=stereo)
    cfg = write_yaml(tmp_path / f"{kind}-{stereo}.yaml", model_type=model_type, model=model)
    torch.manual_seed(seed)
    return randomize(streamer.build_model(streamer.load_config(cfg)), seed=seed, scale=0.1).eval()


def files(folder):
    return sorted(p.name for p in folder.rglob("*")) if folder.exists() else []


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.mark.parametrize("kind", ["bs", "mel"])
@pytest.mark.parametrize("stereo", [True, False], ids=["stereo", "mono"])
@pytest.mark.parametrize("window", [11025, 22050])
def test_equal_to_torch(tmp_path, shared_cache, kind, stereo, window):
    model = build(tmp_path, kind, stereo)
    channels = 2 if stereo else 1
    core = OnnxCore(model, channels, window, threads=1, cache=shared_cache, log=lambda s: None)
    assert core.exported and core.path.is_file() and core.path.parent == shared_cache
    audio = torch.randn(1, channels, window, generator=torch.Generator().manual_seed(1)) * 0.5
    with torch.no_grad():
        reference = model(audio)
        packed = model.analysis(audio)
        core_ref = model.core(packed)
    got_core = core(packed)
    assert got_core.is_complex() and got_core.shape == core_ref.shape
    scale = max(1.0, float(core_ref.abs().max()))
    assert float((got_core - core_ref).abs().max()) <= TOL * scale
    out = run_with_onnx(model, audio, core)
    assert out.shape == reference.shape
    assert float((out - reference).abs().max()) <= TOL * max(1.0, float(reference.abs().max()))
    # a batch of windows runs window by window through the batch-1 graph
    two = torch.cat([audio, audio.flip(-1)])
    with torch.no_grad():
        ref_two = model(two)
    assert float((run_with_onnx(model, two, core) - ref_two).abs().max()) <= TOL * max(1.0, float(ref_two.abs().max()))
    with pytest.raises(ValueError, match="windows"):
        core(model.analysis(torch.zeros(1, channels, window + 2048)))


def test_cache_reused_then_invalidated_by_a_weight(tmp_path):
    model = build(tmp_path, "bs")
    messages = []
    first = OnnxCore(model, 2, 22050, cache=tmp_path / "c", log=messages.append)
    assert first.exported and first.export_seconds > 0
    assert len(messages) == 1 and "exporting the model core to ONNX for 0.50 s windows" in messages[0]
    assert str(tmp_path / "c") in messages[0]
    mtime = first.path.stat().st_mtime_ns

    again = OnnxCore(model, 2, 22050, cache=tmp_path / "c", log=messages.append)
    assert not again.exported and again.path == first.path
    assert first.path.stat().st_mtime_ns == mtime and len(messages) == 1
    # running the model (rotary caches filling) does not change the key
    with torch.no_grad():
        model(torch.randn(1, 2, 30000))
    assert cache_key(model, 2, 22050, "fp32") == first.key

    # other window, other file
    assert cache_key(model, 2, 11025, "fp32") != first.key
    with torch.no_grad():
        p = dict(model.named_parameters())["mask_estimators.0.to_freqs.3.0.2.bias"]
        p[0] += 1e-3  # one number of one band's MLP
    key = cache_key(model, 2, 22050, "fp32")
    assert key != first.key
    changed = OnnxCore(model, 2, 22050, cache=tmp_path / "c", log=messages.append)
    assert changed.exported and changed.path != first.path and changed.path.name == f"{key}.onnx"
    audio = torch.randn(1, 2, 22050) * 0.5
    with torch.no_grad():
        reference = model(audio)
    assert float((run_with_onnx(model, audio, changed) - reference).abs().max()) <= TOL * max(1.0, float(reference.abs().max()))


def test_a_broken_cached_file_is_replaced(tmp_path):
    model = build(tmp_path, "mel", stereo=False)
    path = tmp_path / f"{cache_key(model, 1, 11025, 'fp32')}.onnx"
    path.write_bytes(b"not an onnx graph")
    core = OnnxCore(model, 1, 11025, cache=tmp_path, log=lambda s: None)
    assert core.exported and core.path == path and path.stat().st_size > 1000


@pytest.mark.parametrize("partial", [False, True], ids=["raises", "writes-then-raises"])
def test_failed_export_raises_and_leaves_nothing(tmp_path, monkeypatch, partial):
    def broken_export(module, args, f, *a, **kw):
        if partial:
            with open(f, "wb") as fh:
                fh.write(b"half a graph")
        raise RuntimeError("exporter exploded")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    model = build(tmp_path, "bs")
    cache = tmp_path / "cache"
    with pytest.raises(OnnxUnavailable, match="exporter exploded"):
        OnnxCore(model, 2, 11025, cache=cache, log=lambda s: None)
    assert files(cache) == []


def test_output_that_does_not_match_torch_is_refused(tmp_path, monkeypatch):
    model = build(tmp_path, "bs")
    real_forward = onnx_core._RealCore.forward
    monkeypatch.setattr(onnx_core._RealCore, "forward", lambda self, x: real_forward(self, x) * 1.01)
    with pytest.raises(OnnxUnavailable, match="differs from torch"):
        OnnxCore(model, 2, 11025, cache=tmp_path / "c", log=lambda s: None)
    assert files(tmp_path / "c") == []


def test_cache_dir_honours_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMSTREAM_CACHE_DIR", str(tmp_path / "env"))
    assert cache_dir() == tmp_path / "env" / "onnx"
    model = build(tmp_path, "bs", stereo=False)
    core = OnnxCore(model, 1, 11025, log=lambda s: None)
    assert core.path.parent == tmp_path / "env" / "onnx" and core.path.is_file()
    monkeypatch.delenv("STEMSTREAM_CACHE_DIR")
    assert cache_dir() != tmp_path / "env" / "onnx" and cache_dir().name == "onnx"


def test_unsupported_requests(tmp_path):
    model = build(tmp_path, "bs")
    for precision in ("bf16", "fp16"):
        with pytest.raises(OnnxUnavailable, match="fp32 or int8"):
            OnnxCore(model, 2, 11025, precision=precision, cache=tmp_path)
    with pytest.raises(ValueError, match="channels"):
        OnnxCore(model, 1, 11025, cache=tmp_path)
    assert files(tmp_path) == ["bs-True.yaml"]


def test_onnxruntime_missing_is_unavailable(tmp_path, monkeypatch):
    monkeypatch.setattr(onnx_core, "ort_available", lambda: False)
    assert onnx_core.ort_available() is False
    with pytest.raises(OnnxUnavailable, match="onnxruntime is not installed"):
        OnnxCore(build(tmp_path, "bs"), 2, 11025, cache=tmp_path)


def test_session_threads(tmp_path):
    model = build(tmp_path, "bs", stereo=False)
    core = OnnxCore(model, 1, 11025, threads=1, cache=tmp_path, log=lambda s: None)
    assert core.threads == 1
    assert core.session.get_providers() == ["CPUExecutionProvider"]
    assert os.path.getsize(core.path) > 0


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_a_batch_runs_its_windows_side_by_side_and_equals_torch(tmp_path, shared_cache, kind):
    """With two threads a batch goes window by window to a one-thread session from two threads at
    once; the result is the same as torch's, in order, for odd batch sizes too."""
    model = build(tmp_path, kind)
    core = OnnxCore(model, 2, 11025, threads=2, cache=shared_cache, log=lambda s: None)
    audio = torch.randn(5, 2, 11025, generator=torch.Generator().manual_seed(3)) * 0.5
    with torch.no_grad():
        reference = model(audio)
    for batch in (audio[:2], audio):
        out = run_with_onnx(model, batch, core)
        ref = reference[: batch.shape[0]]
        assert float((out - ref).abs().max()) <= TOL * max(1.0, float(ref.abs().max()))
    with torch.no_grad():  # the core alone, on packed spectra, runs its batch side by side too
        packed = model.analysis(audio)
        masked, ref_masked = core(packed), model.core(packed)
    assert float((masked - ref_masked).abs().max()) <= TOL * max(1.0, float(ref_masked.abs().max()))
    assert core._pool is not None and core._pool_session is not None
    core.close()
    assert core._pool is None
    single = run_with_onnx(model, audio[:1], core)  # still runs after close()
    assert float((single - reference[:1]).abs().max()) <= TOL * max(1.0, float(reference.abs().max()))
