"""The packed (width-grouped) weights are the per-band parameters' own storage: equal to the per-band
modules, no second copy, never stale, never re-checked per call, and kept through dtype/device
conversion, load_state_dict, pickling, deepcopy, the worker hand-over and training."""
import copy
import io
import pickle

import pytest
import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

import streamer
from streamer.stream.share import share_model, unshare_model

from conftest import TINY_BS, randomize, write_yaml

TINY_MEL = {**TINY_BS, "num_bands": 8, "mask_estimator_depth": 2}
KINDS = [("bs", True), ("bs", False), ("mel", True), ("mel", False)]
IDS = ["bs-stereo", "bs-mono", "mel-stereo", "mel-mono"]


def build(tmp_path, kind="bs", stereo=True, seed=0, extra=None):
    model_type = {"bs": "bs_roformer", "mel": "mel_band_roformer"}[kind]
    model = dict(TINY_BS if kind == "bs" else TINY_MEL, stereo=stereo, num_stems=2, **(extra or {}))
    cfg = write_yaml(tmp_path / f"{kind}-{stereo}-{seed}.yaml", model_type=model_type, model=model,
                     stems=("vocals", "other"), target=None)
    torch.manual_seed(seed)
    return randomize(streamer.build_model(streamer.load_config(cfg)), seed=seed, scale=0.1).eval()


def audio_for(model, length=8820, seed=1):
    return torch.randn(1, model.audio_channels, length, generator=torch.Generator().manual_seed(seed)) * 0.3


def close(a, b, tol=2e-6):
    """Equal to float rounding (batched matmuls add up in another order than per-band Linears)."""
    return float((a - b).abs().max()) <= tol * max(1.0, float(b.abs().max()))


def run(model, audio):
    with torch.inference_mode():
        return model(audio)


def band_params(model):
    return [m._parameters[n] for stack in model._stack_members() for m, n in stack]


def holds(model):
    return model._holds([[m._parameters[n] for m, n in stack] for stack in model._stack_members()])


def reset_rotary(model):
    for m in model.modules():  # as load_checkpoint does: the rotary angle cache follows `freqs`
        if hasattr(m, "cached_freqs_seq_len"):
            m.cached_freqs_seq_len = 0


def reference_core(model, packed_stft):
    """``model.core`` written band by band through the per-band modules (no packing at all)."""
    b = packed_stft.shape[0]
    x = rearrange(model._gather(packed_stft), "b f t c -> b t (f c)")
    parts = x.split(list(model.band_split.dim_inputs), dim=-1)
    feats = []
    for (norm, linear), part in zip(model.band_split.to_features, parts):
        feats.append(linear(F.normalize(part, dim=-1) * norm.scale * norm.gamma))
    x = model._transform(torch.stack(feats, dim=-2))
    masks = torch.stack(
        [torch.cat([fn(x[:, :, k]) for k, fn in enumerate(est.to_freqs)], -1) for est in model.mask_estimators], 1
    )
    masks = rearrange(masks, "b n t (f c) -> b n f t c", b=b, c=2)
    masks = torch.view_as_complex(model._spread_masks(masks).contiguous())
    return torch.view_as_complex(packed_stft.contiguous()).unsqueeze(1) * masks


@pytest.mark.parametrize("kind,stereo", KINDS, ids=IDS)
def test_packed_path_equals_the_per_band_modules(tmp_path, kind, stereo):
    model = build(tmp_path, kind, stereo)
    audio = audio_for(model)
    with torch.inference_mode():
        spec = model.analysis(audio)
        fast = model.core(spec)
        slow = reference_core(model, spec)
    assert close(fast, slow), (fast - slow).abs().max()
    # the stacks are exactly the parameters, stacked
    packed, stacked = model.packed_weights(), model._stacked()
    flat = lambda d: [d["gammas"]] + [t for group in d["split"] for t in group] + [  # noqa: E731
        t for shared, last in d["masks"] for pair in shared + last for t in pair]
    assert all(torch.equal(a, b) for a, b in zip(flat(packed), flat(stacked)))
    # and the training-mode path (stacked per call, differentiable) gives the same output
    with torch.no_grad():
        trained_path = model.train()(audio)
    model.eval()
    assert torch.allclose(run(model, audio), trained_path, atol=1e-6)


@pytest.mark.parametrize("kind,stereo", KINDS, ids=IDS)
def test_no_second_copy(tmp_path, kind, stereo):
    model = build(tmp_path, kind, stereo)
    assert holds(model)  # from construction on (the per-band parameters are made in the arena)
    run(model, audio_for(model))
    arena = model._arena
    start, end = arena.data_ptr(), arena.data_ptr() + arena.numel() * arena.element_size()
    params = band_params(model)
    assert sum(p.numel() for p in params) == arena.numel()
    for p in params:  # every per-band parameter lies inside the arena, and is still a leaf Parameter
        assert isinstance(p, nn.Parameter) and p.is_leaf and p.is_contiguous()
        assert start <= p.data_ptr() and p.data_ptr() + p.numel() * p.element_size() <= end
        assert p.untyped_storage()._cdata == arena.untyped_storage()._cdata
    packed = model.packed_weights()
    views = [packed["gammas"]] + [t for g in packed["split"] for t in g] + [
        t for shared, last in packed["masks"] for pair in shared + last for t in pair]
    assert all(t.untyped_storage()._cdata == arena.untyped_storage()._cdata for t in views)
    # all storages reachable from the model's parameters and packed weights: the parameters' bytes
    tensors = list(model.parameters()) + views
    storages = {t.untyped_storage()._cdata: t.untyped_storage().nbytes() for t in tensors}
    assert sum(storages.values()) == sum(p.numel() * p.element_size() for p in model.parameters())


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_load_state_dict_after_a_forward_is_seen(tmp_path, kind):
    model, other = build(tmp_path, kind, seed=0), build(tmp_path, kind, seed=7)
    audio = audio_for(model)
    before = run(model, audio)
    arena = model._arena
    model.load_state_dict(other.state_dict())
    reset_rotary(model)
    assert model._arena is arena  # loaded in place: nothing re-packed, nothing copied
    after = run(model, audio)
    assert not torch.allclose(before, after)
    assert torch.equal(after, run(other, audio))
    # in-place edits through the parameters are seen too
    with torch.no_grad():
        model.mask_estimators[0].to_freqs[1][0][0].bias.add_(0.5)
        model.band_split.to_features[2][0].gamma.mul_(2.0)
    edited = run(model, audio)
    assert not torch.allclose(after, edited)
    with torch.inference_mode():
        spec = model.analysis(audio)
        assert close(model.core(spec), reference_core(model, spec))


def test_load_state_dict_assign_and_meta_construction(tmp_path):
    source = build(tmp_path, "mel", seed=3)
    audio = audio_for(source)
    model = streamer.build_model(streamer.load_config(tmp_path / "mel-True-3.yaml"))
    model.load_state_dict(source.state_dict(), assign=True)
    assert holds(model) and torch.equal(run(model, audio), run(source, audio))
    with torch.device("meta"):
        meta = type(source)(**streamer.load_config(tmp_path / "mel-True-3.yaml").model).eval()
    assert meta._arena.device.type == "meta" and holds(meta)
    meta.to_empty(device="cpu")
    assert meta._arena.device.type == "cpu" and holds(meta)
    meta.load_state_dict(source.state_dict())
    for name in ("stft_window", "freq_indices", "num_bands_per_row"):  # non-persistent buffers
        getattr(meta, name).copy_(getattr(source, name))
    assert torch.equal(run(meta, audio), run(source, audio))


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_dtype_round_trip(tmp_path, kind):
    model = build(tmp_path, kind)
    audio = audio_for(model)
    run(model, audio)
    rounded = {k: v.half().float() for k, v in model.state_dict().items()}
    model.half()
    assert model._arena.dtype == torch.float16 and holds(model)
    assert all(p.dtype == torch.float16 for p in model.parameters())
    model.float()
    assert model._arena.dtype == torch.float32 and holds(model)
    assert all(torch.equal(v, rounded[k]) for k, v in model.state_dict().items())
    expected = build(tmp_path, kind)
    expected.load_state_dict(rounded)
    for name, buffer in model.named_buffers():  # the STFT window went through fp16 too
        expected.get_buffer(name).copy_(buffer)
    reset_rotary(model), reset_rotary(expected)
    assert torch.equal(run(model, audio), run(expected, audio))
    # gradients are converted with their parameters, as nn.Module._apply does
    model.train()
    model(audio).square().mean().backward()
    model.double()
    assert holds(model) and all(p.grad.dtype == torch.float64 for p in band_params(model))
    model.float().eval()
    assert holds(model) and run(model, audio).dtype == torch.float32


def test_share_memory_keeps_the_arena(tmp_path):
    model = build(tmp_path, "bs")
    arena = model._arena
    model.share_memory()
    assert model._arena is arena and arena.is_shared() and holds(model)
    assert all(p.is_shared() for p in model.parameters())


def test_state_dict_is_unchanged(tmp_path):
    from safetensors.torch import load_file, save_model

    model = build(tmp_path, "mel")
    audio = audio_for(model)
    run(model, audio)
    sd = model.state_dict()
    params = dict(model.named_parameters())
    for key, tensor in sd.items():  # each entry a tensor of its own, sharing memory with the parameter
        storage = tensor.untyped_storage()
        assert not isinstance(tensor, nn.Parameter) and tensor.is_contiguous()
        assert storage.nbytes() == tensor.numel() * tensor.element_size()
        if key in params:
            assert tensor.data_ptr() == params[key].data_ptr()
    assert all(isinstance(t, nn.Parameter) for t in model.state_dict(keep_vars=True).values()
               if t.requires_grad)
    save_model(model, str(tmp_path / "m.safetensors"))  # refuses views of a larger storage
    loaded = build(tmp_path, "mel", seed=9)
    streamer.load_checkpoint(loaded, tmp_path / "m.safetensors")
    assert torch.equal(run(loaded, audio), run(model, audio))
    torch.save(sd, tmp_path / "m.ckpt")  # one storage per tensor in the file, as before
    stored = torch.load(tmp_path / "m.ckpt", weights_only=True)
    assert set(load_file(str(tmp_path / "m.safetensors"))) <= set(stored)
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in stored.values())
    # the same when the model is a submodule (keys with a prefix)
    wrapped = nn.ModuleDict({"separator": model}).state_dict()
    assert set(wrapped) == {f"separator.{k}" for k in sd}
    assert all(t.untyped_storage().nbytes() == t.numel() * t.element_size() for t in wrapped.values())


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_deepcopy_and_pickle(tmp_path, kind):
    model = build(tmp_path, kind)
    audio = audio_for(model)
    expected = run(model, audio)

    twin = copy.deepcopy(model)
    assert twin._arena is None  # not copied: rebuilt from the copied parameters at the first forward
    assert torch.equal(run(twin, audio), expected) and holds(twin)
    assert twin._arena.data_ptr() != model._arena.data_ptr()
    assert not twin._arena.is_inference()  # rebuilt under inference_mode, as normal tensors all the same
    twin.train()
    twin(audio).square().mean().backward()
    assert all(p.grad is not None for p in band_params(twin))

    buf = io.BytesIO()
    torch.save(model, buf)
    buf.seek(0)
    loaded = torch.load(buf, weights_only=False)
    storage = band_params(loaded)[0].untyped_storage()
    assert torch.equal(run(loaded, audio), expected) and holds(loaded)
    # the parameters came back as views of one stored arena: adopted, not copied
    assert loaded._arena.untyped_storage()._cdata == storage._cdata


def test_worker_hand_over_packs_once(tmp_path, monkeypatch):
    model = build(tmp_path, "mel")
    audio = audio_for(model)
    expected = run(model, audio)
    worker = unshare_model(pickle.loads(pickle.dumps(share_model(model))))
    calls = []
    original = type(worker)._repack
    monkeypatch.setattr(type(worker), "_repack", lambda self: (calls.append(1), original(self))[1])
    for _ in range(3):  # (the shared block aligns the other weights differently: float rounding)
        assert close(run(worker, audio), expected, tol=1e-6)
    assert len(calls) == 1 and holds(worker)


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_training_step_reaches_every_parameter_and_is_seen_in_eval(tmp_path, kind):
    model = build(tmp_path, kind)
    audio = audio_for(model)
    before = run(model, audio)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    model.train()
    model(audio).square().mean().backward()
    for name, p in model.named_parameters():
        if p.requires_grad:
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    opt.step()
    assert holds(model)
    model.eval()
    after = run(model, audio)
    assert not torch.allclose(before, after)
    with torch.no_grad():
        stacked = model.train()(audio)  # stacks the parameters now: the eval path is not stale
    model.eval()
    assert torch.allclose(after, stacked, atol=1e-6)


def test_built_under_inference_mode(tmp_path):
    cfg = write_yaml(tmp_path / "bs.yaml", model=TINY_BS)
    normal = randomize(streamer.build_model(streamer.load_config(cfg)))
    with torch.inference_mode():
        model = streamer.build_model(streamer.load_config(cfg))
        model.load_state_dict(normal.state_dict())
    audio = audio_for(model)
    assert holds(model) and torch.equal(run(model, audio), run(normal, audio))
    assert all(p.is_inference() for p in model.parameters())  # all of one kind, as the model was built
    with torch.no_grad():
        assert torch.equal(model(audio), run(normal, audio))


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_no_walk_over_the_parameters_per_call(tmp_path, kind):
    model = build(tmp_path, kind)
    audio = audio_for(model)
    expected = run(model, audio)

    def walk(*args, **kwargs):
        raise AssertionError("walked the parameters in an eval forward")

    for name in ("_stack_members", "_band_parameters", "_repack", "_stacked", "parameters", "named_parameters"):
        setattr(model, name, walk)
    for _ in range(2):
        assert torch.equal(run(model, audio), expected)
    with torch.no_grad():  # eval with gradients enabled in no_grad, and eval with grad mode on
        assert torch.equal(model(audio), expected)
    assert torch.equal(model(audio).detach(), expected)


def test_replaced_parameter_needs_repack(tmp_path):
    model = build(tmp_path, "bs")
    audio = audio_for(model)
    before = run(model, audio)
    linear = model.mask_estimators[0].to_freqs[3][0][0]
    linear.weight = nn.Parameter(linear.weight.detach() * 3.0)
    model.repack()
    assert holds(model)
    after = run(model, audio)
    assert not torch.allclose(before, after)
    with torch.inference_mode():
        spec = model.analysis(audio)
        assert close(model.core(spec), reference_core(model, spec))


def test_mixed_band_dtypes_fall_back_to_stacking(tmp_path):
    model = build(tmp_path, "bs").double()
    audio = audio_for(model).double()
    expected = run(model, audio)
    linear = model.band_split.to_features[0][1]
    linear.weight.data = linear.weight.data.float()  # by hand: no arena can hold both dtypes
    model.repack()
    assert model._arena is None and model._loose
    assert close(run(model, audio), expected, tol=1e-6)  # stacked (and promoted) per call
    linear.weight.data = linear.weight.data.double()
    model.repack()
    assert holds(model) and not model._loose and close(run(model, audio), expected, tol=1e-6)


@pytest.mark.parametrize("kind", ["bs", "mel"])
def test_a_worker_adopts_the_shared_arena_without_a_copy(tmp_path, kind):
    """The per-band weights reach the worker process laid out in arena order inside the shared block:
    the worker's model uses that memory as its arena (no private copy of the band weights)."""
    model = build(tmp_path, kind)
    audio = audio_for(model)
    expected = run(model, audio)
    shared = pickle.loads(pickle.dumps(share_model(model)))
    worker = unshare_model(shared)
    assert close(run(worker, audio), expected, tol=1e-6)
    block = shared.blocks[str(worker._arena.dtype).replace("torch.", "")]
    assert worker._arena.untyped_storage().data_ptr() == block.untyped_storage().data_ptr()
    assert holds(worker)
