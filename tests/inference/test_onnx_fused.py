"""Attention exported as ONNX Runtime's fused operators: the same numbers as the model in torch, the fused
nodes in the graph, and the plain graph when a runtime cannot run them."""
import pytest
import torch
from rotary_embedding_torch import RotaryEmbedding

import streamer
from streamer.inference import onnx_core
from streamer.inference.onnx_core import OnnxCore, ort_available, run_with_onnx
from streamer.inference.onnx_fused import fusable, fused_attention
from streamer.models.layers import Attention

from conftest import TINY_BS, randomize, write_yaml

onnx = pytest.importorskip("onnx", reason="the ONNX exporter needs the onnx package (pip install onnx)")
pytestmark = pytest.mark.skipif(not ort_available(), reason="onnxruntime is not installed")

TOL = 1e-5


def build(tmp_path, kind="bs", **extra):
    model_type = {"bs": "bs_roformer", "mel": "mel_band_roformer"}[kind]
    model = dict(TINY_BS, **extra)
    if kind == "mel":
        model["num_bands"] = 8
    cfg = write_yaml(tmp_path / f"{kind}.yaml", model_type=model_type, model=model)
    torch.manual_seed(0)
    return randomize(streamer.build_model(streamer.load_config(cfg)), seed=0, scale=0.1).eval()


def op_types(path):
    return {node.op_type for node in onnx.load(str(path)).graph.node}


def op_count(path, op):
    return sum(node.op_type == op for node in onnx.load(str(path)).graph.node)


@pytest.mark.parametrize("rotary", [True, False], ids=["rotary", "no-rotary"])
@pytest.mark.parametrize("length", [1, 7, 50])
def test_the_fused_forward_is_the_models_to_the_bit(rotary, length):
    torch.manual_seed(length)
    module = Attention(24, heads=3, dim_head=8, rotary_embed=RotaryEmbedding(dim=8) if rotary else None).eval()
    with torch.no_grad():
        for p in module.parameters():
            p.add_(torch.randn_like(p) * 0.2)
    x = torch.randn(5, length, 24)
    with torch.no_grad():
        plain = module(x)
        with fused_attention(module) as replaced:
            fused = module(x)
        after = module(x)
    assert replaced == 1
    assert torch.equal(fused, plain), float((fused - plain).abs().max())
    assert torch.equal(after, plain) and "forward" not in module.__dict__  # the module's own forward is back


def test_only_attention_the_fused_operators_express_is_replaced():
    def attention(**rotary):
        return Attention(16, heads=2, dim_head=8, rotary_embed=RotaryEmbedding(**{"dim": 8, **rotary}))

    assert fusable(attention())
    assert fusable(Attention(16, heads=2, dim_head=8, rotary_embed=None))
    assert not fusable(attention(use_xpos=True))
    assert not fusable(attention(interpolate_factor=2.0))
    assert not fusable(attention(dim=4))                      # rotary over part of each head
    assert not fusable(attention(seq_before_head_dim=True))
    with fused_attention(attention(use_xpos=True)) as replaced:
        assert replaced == 0


@pytest.mark.parametrize("kind,extra", [("bs", {}), ("mel", {}), ("bs", {"linear_transformer_depth": 1})],
                         ids=["bs", "mel", "bs-linear-attention"])
def test_the_exported_graph_has_the_fused_operators_and_equals_torch(tmp_path, kind, extra):
    model = build(tmp_path, kind, **extra)
    core = OnnxCore(model, 2, 11025, threads=1, cache=tmp_path / "cache", log=lambda s: None)
    ops = op_types(core.path)
    assert {"MultiHeadAttention", "RotaryEmbedding"} <= ops
    assert op_count(core.path, "MultiHeadAttention") == 2  # one time and one frequency transformer
    assert op_count(core.path, "Softmax") == (1 if extra else 0)  # linear attention keeps its traced softmax
    audio = torch.randn(1, 2, 11025, generator=torch.Generator().manual_seed(2)) * 0.5
    with torch.no_grad():
        reference = model(audio)
    assert float((run_with_onnx(model, audio, core) - reference).abs().max()) <= TOL * max(1.0, float(reference.abs().max()))


def test_a_runtime_without_the_fused_operators_gets_the_plain_graph(tmp_path, monkeypatch):
    real_session = onnx_core._session
    refused = []

    def session_without_contrib_ops(path, threads, spin):
        if "MultiHeadAttention" in op_types(path):
            refused.append(path)
            raise RuntimeError("Could not find an implementation for MultiHeadAttention(1) node")
        return real_session(path, threads, spin)

    monkeypatch.setattr(onnx_core, "_session", session_without_contrib_ops)
    model = build(tmp_path, "bs")
    cache = tmp_path / "cache"
    core = OnnxCore(model, 2, 11025, threads=1, cache=cache, log=lambda s: None)
    assert refused and core.exported
    ops = op_types(core.path)
    assert "MultiHeadAttention" not in ops and "RotaryEmbedding" not in ops and "Softmax" in ops
    assert sorted(p.name for p in cache.iterdir()) == [core.path.name]  # nothing else left behind
    audio = torch.randn(1, 2, 11025, generator=torch.Generator().manual_seed(4)) * 0.5
    with torch.no_grad():
        reference = model(audio)
    assert float((run_with_onnx(model, audio, core) - reference).abs().max()) <= TOL * max(1.0, float(reference.abs().max()))
    # the plain graph is what the cache holds now: the next core opens it without exporting
    again = OnnxCore(model, 2, 11025, threads=1, cache=cache, log=lambda s: None)
    assert not again.exported and len(refused) == 1


def test_a_fused_graph_that_disagrees_with_torch_gives_way_to_the_plain_graph(tmp_path, monkeypatch):
    """A fused operator that runs but computes something else (here: the wrong scale) fails the check
    window; the plain graph is exported, checked and cached instead, and a message says so."""
    from streamer.inference import onnx_fused

    def wrong_scale(g, q, k, v, heads):
        out = g.op("com.microsoft::MultiHeadAttention", q, k, v, num_heads_i=heads, scale_f=0.5)
        out.setType(q.type())
        return out

    monkeypatch.setattr(onnx_fused._MultiHeadAttention, "symbolic", staticmethod(wrong_scale))
    said = []
    model = build(tmp_path, "bs")
    core = OnnxCore(model, 2, 11025, threads=1, cache=tmp_path / "cache", log=said.append)
    assert "MultiHeadAttention" not in op_types(core.path) and core.check_error < TOL
    assert any("plain graph" in line and "differs from torch" in line for line in said)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == [core.path.name]


def test_a_failed_int8_quantisation_leaves_the_cached_fp32_graph_alone(tmp_path, monkeypatch):
    model = build(tmp_path, "bs")
    cache = tmp_path / "cache"
    fp32 = OnnxCore(model, 2, 11025, threads=1, cache=cache, log=lambda s: None)
    before = fp32.path.read_bytes()

    def broken_quantize(source, path):
        path.write_bytes(b"half a graph")
        raise RuntimeError("quantiser exploded")

    monkeypatch.setattr(onnx_core, "_quantize", broken_quantize)
    with pytest.raises(onnx_core.OnnxUnavailable, match="quantiser exploded"):
        OnnxCore(model, 2, 11025, threads=1, cache=cache, precision="int8", log=lambda s: None)
    assert sorted(p.name for p in cache.iterdir()) == [fp32.path.name] and fp32.path.read_bytes() == before
    again = OnnxCore(model, 2, 11025, threads=1, cache=cache, log=lambda s: None)
    assert not again.exported and "MultiHeadAttention" in op_types(again.path)
