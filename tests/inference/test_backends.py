"""make_runner's backends and demix/engine with them: ONNX Runtime's core equals eager torch fp32."""
import numpy as np
import pytest
import torch

import streamer
from streamer.inference.demix import demix
from streamer.inference.onnx_core import ort_available
from streamer.inference.runner import make_runner
from streamer.msst.build import build_model

from conftest import randomize, write_yaml

needs_ort = pytest.mark.skipif(not ort_available(), reason="onnxruntime is not installed")


@pytest.fixture
def model(tmp_path, monkeypatch):
    monkeypatch.setenv("STEMSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    config = streamer.load_config(write_yaml(tmp_path / "m.yaml", stems=("vocals", "other"), target=None,
                                             extra_model={"num_stems": 2}, chunk_size=11025))
    return randomize(build_model(config)).eval(), config


@needs_ort
@pytest.mark.parametrize("backend", ["onnx", "auto"])
def test_runner_backends_equal_eager_fp32(model, backend):
    m, _ = model
    x = (np.random.default_rng(0).standard_normal((2, 11025)) * 0.1).astype(np.float32)
    with torch.inference_mode():
        ref = m(torch.from_numpy(x)[None])[0].numpy()
    r = make_runner(m, 11025, backend=backend)
    assert r.backend in ("torch", "onnx") and r.describe().startswith(r.backend)
    if backend == "onnx":
        assert r.backend == "onnx" and "ONNX Runtime" in r.describe()
    np.testing.assert_allclose(r(x), ref, atol=1e-5 * max(1.0, np.abs(ref).max()))


@needs_ort
def test_demix_and_the_engine_with_the_onnx_core(model):
    m, config = model
    mix = (np.random.default_rng(1).standard_normal((2, 30000)) * 0.1).astype(np.float32)
    ref = demix(m, mix, 11025, 2)
    got = demix(m, mix, 11025, 2, backend="onnx")
    np.testing.assert_allclose(got, ref, atol=1e-5)
    engine = streamer.StreamEngine.from_config(config, m, preset="low", window=11025, hop=2205, lookahead=2205,
                                               crossfade=None, backend="onnx")
    out = engine.separate(mix)
    assert engine.stats["backend"] == "onnx" and np.isfinite(out).all()
    torch_engine = streamer.StreamEngine.from_config(config, m, preset="low", window=11025, hop=2205,
                                                     lookahead=2205, crossfade=None)
    assert torch_engine.stats["backend"] == "torch"
    np.testing.assert_allclose(out, torch_engine.separate(mix), atol=1e-5)


def test_onnx_where_it_cannot_run_falls_back_to_torch_with_one_warning(model, monkeypatch, caplog):
    import streamer.inference.onnx_core as oc

    m, _ = model
    monkeypatch.setattr(oc, "ort_available", lambda: False)
    with caplog.at_level("WARNING"):
        r = make_runner(m, 11025, backend="onnx")
    assert r.backend == "torch"
    assert "ONNX Runtime backend unavailable" in caplog.text
    assert make_runner(m, 11025, backend="auto").backend == "torch"


@needs_ort
def test_bench_model_compare_prints_every_option_against_eager(tmp_path, monkeypatch, capsys):
    from bridge.cli.main import main

    monkeypatch.setenv("STEMSTREAM_CACHE_DIR", str(tmp_path / "cache"))
    cfg = write_yaml(tmp_path / "c.yaml", stems=("vocals", "other"), target=None, extra_model={"num_stems": 2})
    assert main(["bench-model", "--compare", "--config", str(cfg), "--seconds", "0.25", "--repeats", "2"]) == 0
    out = capsys.readouterr().out
    rows = [line for line in out.splitlines() if line.startswith("c.yaml")]
    assert any("torch fp32 (eager)" in r and "1.00x" in r and "0.0e+00" in r for r in rows)
    onnx = [r for r in rows if "ONNX Runtime" in r]
    assert onnx and float(onnx[0].split()[-1]) < 1e-5


@needs_ort
def test_int8_runs_in_the_onnx_core_within_its_tolerance(model, tmp_path):
    """int8: the ONNX core with int8 matrix products; close to eager fp32 (a few % of the scale), its
    own cached graph, and refused with the torch backend."""
    from streamer.inference.precision import resolve_precision

    m, _ = model
    x = (np.random.default_rng(2).standard_normal((2, 11025)) * 0.3).astype(np.float32)
    ref = make_runner(m, 11025, "cpu", "fp32", backend="torch")(x)
    r8 = make_runner(m, 11025, "cpu", "int8", backend="onnx")
    assert r8.backend == "onnx" and r8.core.precision == "int8" and "int8" in r8.describe()
    assert r8.core.path.name.split("-")[3] == "int8"
    out = r8(x)
    err = np.abs(out - ref).max() / np.abs(ref).max()
    assert 0 < err < 0.2
    # every product with a weight is quantised, the band-split and mask-estimator ones included
    # (the tracer records those packed weights as Constant nodes, which the quantiser alone skips)
    import onnx

    graph = onnx.load(str(r8.core.path)).graph
    weights = {t.name for t in graph.initializer}
    weights |= {n.output[0] for n in graph.node if n.op_type == "Constant"}
    float_products = [n.name for n in graph.node if n.op_type in ("MatMul", "Gemm") and n.input[1] in weights]
    quantised = [n for n in graph.node if n.op_type in ("MatMulInteger", "DynamicQuantizeMatMul")]
    assert float_products == [] and len(quantised) >= 4 * 2 + 2  # 2 layers x (qkv, out, 2 ff) + band split, masks
    auto = make_runner(m, 11025, "cpu", "int8", backend="auto")  # asked for: not raced against torch
    assert auto.backend == "onnx" and auto.core.precision == "int8"
    with pytest.raises(streamer.SettingsError, match="int8 runs in the ONNX Runtime core"):
        make_runner(m, 11025, "cpu", "int8", backend="torch")
    mix = (np.random.default_rng(3).standard_normal((2, 30000)) * 0.1).astype(np.float32)
    got = demix(m, mix, 11025, 2, precision="int8", backend="onnx")
    plain = demix(m, mix, 11025, 2)
    assert np.abs(got - plain).max() / np.abs(plain).max() < 0.2
    with pytest.raises(streamer.SettingsError, match="int8"):
        demix(m, mix, 11025, 2, precision="int8", backend="torch")
    assert resolve_precision("int8", "cpu") == "int8"
    assert resolve_precision("int8", "meta") == "fp32"


@needs_ort
def test_separate_of_many_files_makes_one_runner(model, tmp_path, monkeypatch):
    """Plain `separate` of a library makes the ONNX core once, not once per file, and every file's
    stems equal torch's."""
    import soundfile as sf

    from bridge.cli.main import main
    from streamer.inference import demix as demix_module

    _, config = model
    made = []
    real = demix_module.make_runner
    monkeypatch.setattr(demix_module, "make_runner", lambda *a, **kw: made.append(a[1]) or real(*a, **kw))
    rng = np.random.default_rng(5)
    inputs = []
    for i, n in enumerate((30000, 12000, 45000)):
        path = tmp_path / f"song{i}.wav"
        sf.write(path, (rng.standard_normal((n, 2)) * 0.1).astype(np.float32), 44100, subtype="FLOAT")
        inputs.append(str(path))
    ckpt = tmp_path / "m.ckpt"
    torch.save(model[0].state_dict(), ckpt)
    common = ["--config", str(tmp_path / "m.yaml"), "--checkpoint", str(ckpt), "--no-progress"]
    assert main(["separate", *inputs, *common, "--out", str(tmp_path / "onnx"), "--backend", "onnx"]) == 0
    assert made == [11025]
    assert main(["separate", *inputs, *common, "--out", str(tmp_path / "torch"), "--backend", "torch"]) == 0
    assert made == [11025]  # torch needs no runner
    for i in range(3):
        for stem in config.stems:
            a, _ = sf.read(tmp_path / "onnx" / f"song{i}" / f"{stem}.wav", dtype="float32")
            b, _ = sf.read(tmp_path / "torch" / f"song{i}" / f"{stem}.wav", dtype="float32")
            np.testing.assert_allclose(a, b, atol=1e-5)
