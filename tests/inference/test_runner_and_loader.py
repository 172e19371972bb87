"""One device rule, one precision rule, and one model loader for the CLI, the separator and rig files."""
import logging

import numpy as np
import pytest
import torch

import streamer
from bridge import StemSeparator
from streamer.errors import ConfigError, SettingsError
from streamer.inference.loader import load_model
from streamer.inference.precision import resolve_device, resolve_precision
from streamer.inference.runner import make_runner

from conftest import randomize, write_yaml


def test_precision_rule(caplog):
    assert resolve_precision("auto", "cpu") == "fp32"
    assert resolve_precision(None, "cpu") == "fp32"
    assert resolve_precision("auto", "cuda") == "bf16"
    assert resolve_precision("auto", "cuda", use_amp=False) == "fp32"
    assert resolve_precision("float16", "cuda") == "fp16" and resolve_precision("bfloat16", "cuda") == "bf16"
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("fp16", "cpu") == "fp32"
    assert "does not run on cpu" in caplog.text


def test_bf16_on_the_cpu_only_where_it_is_native(monkeypatch, caplog):
    """bf16 autocast on the CPU only on a CPU with native bf16 (simulated both ways); auto stays fp32."""
    import streamer.inference.precision as precision

    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    assert resolve_precision("bf16", "cpu") == "bf16" and resolve_precision("auto", "cpu") == "fp32"
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: False)
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert resolve_precision("bf16", "cpu") == "fp32"
    assert "no native bf16" in caplog.text
    assert isinstance(precision.cpu_has_native_bf16(), bool)


def test_runner_backends_agree_with_eager_fp32(model_files, monkeypatch):
    """make_runner: torch fp32 is the model itself; bf16 (where native) within its tolerance; an
    unknown backend is refused; asking for onnx where it cannot run falls back to torch."""
    import streamer.inference.precision as precision

    cfg, ckpt, _ = model_files
    model = load_model(cfg, ckpt).model
    x = (np.random.default_rng(0).standard_normal((2, 4410)) * 0.1).astype(np.float32)
    with torch.inference_mode():
        ref = model(torch.from_numpy(x)[None])[0].numpy()
    r = make_runner(model, 4410, backend="torch")
    assert r.backend == "torch" and "fp32" in r.describe()
    np.testing.assert_array_equal(r(x), ref)
    monkeypatch.setattr(precision, "cpu_has_native_bf16", lambda: True)
    rb = make_runner(model, 4410, precision="bf16", backend="auto")
    assert rb.backend == "torch" and rb.precision == "bf16"      # ONNX Runtime runs fp32 and int8 only
    err = np.abs(rb(x) - ref).max() / max(1e-6, np.abs(ref).max())
    assert err < 0.05, err
    with pytest.raises(SettingsError, match="backend must be one of"):
        make_runner(model, 4410, backend="tensorrt")
    with pytest.raises(SettingsError, match="precision must be fp32, bf16, fp16 or int8"):
        resolve_precision("int4", "cpu")


def test_device_rule():
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(SettingsError, match="not a device"):
        resolve_device("foo")
    if not torch.cuda.is_available():
        with pytest.raises(SettingsError, match="no CUDA device"):
            resolve_device("cuda")


@pytest.fixture
def model_files(tmp_path):
    cfg = write_yaml(tmp_path / "m.yaml")
    config = streamer.load_config(cfg)
    torch.manual_seed(0)
    model = randomize(streamer.build_model(config), seed=4)
    ckpt = tmp_path / "m.ckpt"
    torch.save(model.state_dict(), ckpt)
    return cfg, ckpt, model


def test_load_model_from_a_path_or_a_config(model_files):
    cfg, ckpt, reference = model_files
    loaded = load_model(cfg, ckpt)
    assert loaded.trained and loaded.checkpoint == str(ckpt)
    assert loaded.device == torch.device("cpu") and loaded.precision == "fp32"
    assert loaded.num_parameters == sum(p.numel() for p in reference.parameters())
    for k, v in reference.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[k], v), k
    again = load_model(loaded.config, ckpt)
    assert again.config is loaded.config
    random_a, random_b = load_model(cfg, seed=3), load_model(cfg, seed=3)
    assert not random_a.trained
    for k, v in random_a.model.state_dict().items():
        assert torch.equal(random_b.model.state_dict()[k], v), k
    with pytest.raises(ConfigError):
        load_model(cfg.parent / "missing.yaml")


def test_separator_and_rig_load_through_the_same_loader(tmp_path, model_files):
    import yaml

    cfg, ckpt, reference = model_files
    sep = StemSeparator.from_config(cfg, checkpoint=ckpt)
    rig = tmp_path / "rig.yaml"
    rig.write_text(yaml.safe_dump({"model": {"config": str(cfg), "checkpoint": str(ckpt)}}))
    from_rig = StemSeparator.from_rig(rig)
    for s in (sep, from_rig):
        for k, v in reference.state_dict().items():
            assert torch.equal(s.engine.model.state_dict()[k], v), k


def test_window_runner_shapes_and_warm_up_check(model_files):
    cfg, ckpt, _ = model_files
    loaded = load_model(cfg, ckpt)
    runner = make_runner(loaded.model, 4410, torch.device("cpu"), "fp32", channels=2)
    out = runner(np.zeros((2, 4410), np.float32))
    assert out.shape == (1, 2, 4410) and out.dtype == np.float32
    runner.warm_up(1)
    with pytest.raises(SettingsError, match="returned stems of shape"):
        runner.warm_up(2)
