"""Effect chains changed while streaming, and chains that produce inf/NaN (hardening items 8 and 9).

Item 8: a stem's chain swapped mid-stream must keep every stem aligned (the stage's latency never
changes while streaming: a latency budget fixed for the stream, chains beyond it refused), and must
neither go silent nor click: the old and the new chain's outputs are crossfaded over 10 ms
(equal-gain, raised cosine) while the old chain keeps running. The references are computed offline:
the same input through each chain alone (fresh), then the expected crossfades applied.

Item 9: a block of inf/NaN from a stem's chain is replaced by silence for that stem (the last good
output faded out over a few ms, then a short fade back in), counted, and the chain is reset; the
other stems are untouched.
"""
import numpy as np
import pytest
from pedalboard import Chorus, Gain, Pedalboard, Reverb
from pedalboard_native._internal import AddLatency
from standins import IdentityModel

import streamer
from bridge import StemSeparator
from bridge.mix.effects import EffectStage

from conftest import write_yaml

RATE = 44100
E = 256                          # the stage's block
XFADE = round(0.010 * RATE)      # 10 ms crossfade
STEMS = ("vocals", "drums", "bass", "other")


# ------------------------------------------------------------------ signals and references
def tones(n, seed=0, channels=2):
    """Smooth, non-zero test signal (two sines per channel) so a click or a gap shows up as a step."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / RATE
    f = rng.uniform(150, 400, (channels, 2))
    ph = rng.uniform(0, 2 * np.pi, (channels, 2))
    x = 0.3 * np.sin(2 * np.pi * f[:, :1] * t + ph[:, :1]) + 0.2 * np.sin(2 * np.pi * f[:, 1:] * t + ph[:, 1:])
    return x.astype(np.float32)


def stem_input(n, seed=0):
    """(stems, channels, n) and dry: every stem a different signal, dry another one."""
    stems = np.stack([tones(n, seed + s) for s in range(len(STEMS))])
    return stems, tones(n, seed + 10)


def through(chain, x):
    """x through ``chain`` alone (fresh), streamed in blocks of E, aligned with x (latency flushed)."""
    if chain is None:
        return x.copy()
    chain.reset()
    n = x.shape[1]
    padded = np.concatenate([x, np.zeros((x.shape[0], 8 * E + (-n) % E), np.float32)], axis=1)
    out = np.concatenate([chain(padded[:, i:i + E], RATE, buffer_size=E, reset=False)
                          for i in range(0, padded.shape[1], E)], axis=1)
    return out[:, :n]


def w(v):
    """The crossfade's fade-in (raised cosine); the fade-out is 1 - w: equal gain."""
    return np.sin(0.5 * np.pi * np.clip(v, 0.0, 1.0)) ** 2


def crossfaded(x, segments):
    """Expected stem: segment k (start S_k, chain factory) runs fresh from S_k; at each S_k the mix of
    what sounded before crossfades into segment k over XFADE samples (equal gain)."""
    n = x.shape[1]
    t = np.arange(n)
    outs = []
    for start, make in segments:
        y = np.zeros_like(x)
        y[:, start:] = through(make(), x[:, start:])
        outs.append(y)
    g = np.zeros((len(segments), n))
    g[0] = 1.0
    for k, (start, _) in enumerate(segments[1:], 1):
        wk = w((t - start) / XFADE)
        g *= 1.0 - wk
        g[k] += wk
    return sum(gk * yk for gk, yk in zip(g, outs)).astype(np.float32)


def delayed(x, lead):
    return np.concatenate([np.zeros(x.shape[:-1] + (lead,), np.float32), x[..., :x.shape[-1] - lead]], axis=-1)


def assert_no_gap_and_no_click(y, refs, skip, what):
    """No all-zero stretch (32 samples) in y[skip:], and no step between samples larger than the
    largest step of the references (the chains alone, after their onset at ``skip``) plus a small
    margin: a hard switch between two chains here steps by about 0.1, the signal itself by < 0.04."""
    body = np.abs(y[:, skip:]).max(axis=0) < 1e-6
    run = np.convolve(body.astype(int), np.ones(32, int), "valid")
    assert run.max(initial=0) < 32, f"{what}: {32} silent samples in a row at {skip + int(np.argmax(run))}"
    step = np.abs(np.diff(y[:, skip:], axis=1)).max()
    allowed = max(np.abs(np.diff(r[:, skip:], axis=1)).max() for r in refs) * 1.25 + 0.005
    assert step <= allowed, f"{what}: a step of {step:.4f} between samples (the chains alone: <= {allowed:.4f})"


def stream(stage, stems, dry, chunk, swaps=None):
    """Run the stage over (stems, dry) in ``chunk``-sample calls; swaps: {call index: (stem, chain)}
    applied before that call. Returns the outputs and the stage's input position of each swap,
    i.e. the first block not yet processed (the block the new chain starts on)."""
    outs_s, outs_d, at = [], [], {}
    fed = 0
    for i, pos in enumerate(range(0, stems.shape[-1], chunk)):
        if swaps and i in swaps:
            name, chain = swaps[i]
            stage.set(name, chain)
            at[i] = (fed // E) * E
        s, d = stage.process(stems[..., pos:pos + chunk], dry[:, pos:pos + chunk])
        outs_s.append(s)
        outs_d.append(d)
        fed += stems[..., pos:pos + chunk].shape[-1]
    return np.concatenate(outs_s, axis=-1), np.concatenate(outs_d, axis=-1), at


# the chains a performer swaps between: [], Gain(-6), AddLatency(k)+Gain, Reverb (fresh objects each time)
KINDS = [
    lambda: None,
    lambda: Pedalboard([Gain(-6)]),
    lambda: Pedalboard([AddLatency(173), Gain(-3)]),
    lambda: Pedalboard([Reverb(room_size=0.6)]),
    lambda: Pedalboard([]),
    lambda: Pedalboard([AddLatency(300), Gain(2)]),
]
FIRST = lambda: Pedalboard([AddLatency(300), Gain(-3)])  # noqa: E731  (the chain the stream starts with: budget 300)


# ------------------------------------------------------------------ item 8: swaps while streaming
@pytest.mark.parametrize("chunk", [E, 441])
def test_rapid_swaps_match_the_offline_crossfaded_reference(chunk):
    n = 120 * E
    stems, dry = stem_input(n)
    stage = EffectStage(STEMS, RATE, 2, E)
    stage.set("vocals", FIRST())
    lead = stage.latency_samples
    assert lead == E + 300
    # swap every few calls, sometimes every call (crossfades then overlap)
    gaps = [3, 1, 2, 1, 1, 4, 2, 3, 1, 5, 2, 1, 3, 2, 6, 1, 1, 2, 4, 3]
    calls, plan, k = 4, {}, 0
    for g in gaps:
        plan[calls] = KINDS[k % len(KINDS)]
        calls += g
        k += 1
    swaps = {i: ("vocals", make()) for i, make in plan.items()}
    out, out_dry, at = stream(stage, stems, dry, chunk, swaps)
    refs = [delayed(through(make(), stems[0]), lead) for make in KINDS + [FIRST]]
    assert_no_gap_and_no_click(out[0], refs, lead, "vocals")
    assert stage.latency_samples == lead, "the stage's latency changed mid-stream"
    segments = [(0, FIRST)] + [(at[i], plan[i]) for i in sorted(plan)]
    expected = delayed(crossfaded(stems[0], segments), lead)
    np.testing.assert_allclose(out[0], expected, atol=2e-5, err_msg="vocals differ from the crossfaded reference")
    for s in range(1, len(STEMS)):  # every other stem and the dry signal untouched, aligned, bit-exact
        np.testing.assert_array_equal(out[s], delayed(stems[s], lead))
    np.testing.assert_array_equal(out_dry, delayed(dry, lead))


def test_a_swap_keeps_the_old_chain_running_through_the_crossfade():
    """Reverb -> Gain: during the 10 ms the reverb's output (tail included) fades out, not cut."""
    n = 40 * E
    stems, dry = stem_input(n, seed=3)
    stage = EffectStage(STEMS, RATE, 2, E)
    stage.set("drums", Pedalboard([Reverb(room_size=0.9, wet_level=0.8)]))
    lead = stage.latency_samples
    out, _, at = stream(stage, stems, dry, E, {10: ("drums", Pedalboard([Gain(-6)]))})
    expected = crossfaded(stems[1], [(0, lambda: Pedalboard([Reverb(room_size=0.9, wet_level=0.8)])),
                                     (at[10], lambda: Pedalboard([Gain(-6)]))])
    np.testing.assert_allclose(out[1], delayed(expected, lead), atol=2e-5)
    np.testing.assert_array_equal(out[0], delayed(stems[0], lead))


def test_toggling_back_to_a_chain_still_fading_out_reuses_it_without_a_reset():
    """A performer switches the reverb off and on again within the crossfade: the reverb object
    keeps running (its tail is not wiped) and the gains follow the equal-gain rule."""
    n = 40 * E
    stems, dry = stem_input(n, seed=4)
    reverb = Pedalboard([Reverb(room_size=0.8)])
    stage = EffectStage(STEMS, RATE, 2, E)
    stage.set("vocals", reverb)
    lead = stage.latency_samples
    out, _, at = stream(stage, stems, dry, E, {12: ("vocals", None), 13: ("vocals", reverb)})
    t = np.arange(n)
    w1, w2 = w((t - at[12]) / XFADE), w((t - at[13]) / XFADE)
    rev = through(Pedalboard([Reverb(room_size=0.8)]), stems[0])  # ran from the start, never reset
    expected = rev * ((1 - w1) * (1 - w2) + w2) + stems[0] * (w1 * (1 - w2))
    np.testing.assert_allclose(out[0], delayed(expected.astype(np.float32), lead), atol=2e-5)
    assert stage.get("vocals") is reverb


def test_a_chain_beyond_the_streams_latency_budget_is_refused_and_nothing_changes():
    n = 30 * E
    stems, dry = stem_input(n, seed=5)
    stage = EffectStage(STEMS, RATE, 2, E)
    first = Pedalboard([AddLatency(300), Gain(-3)])
    stage.set("vocals", first)
    lead = stage.latency_samples
    outs = [stage.process(stems[..., i:i + E], dry[:, i:i + E])[0] for i in range(0, 10 * E, E)]
    with pytest.raises(ValueError, match=r"latency.*(budget|300)"):
        stage.set("bass", Pedalboard([AddLatency(301)]))
    with pytest.raises(ValueError, match=r"latency.*(budget|300)"):
        stage.set("vocals", Pedalboard([AddLatency(600), Gain(-3)]))
    assert stage.latency_samples == lead and stage.get("vocals") is first and stage.get("bass") is None
    outs += [stage.process(stems[..., i:i + E], dry[:, i:i + E])[0] for i in range(10 * E, n, E)]
    out = np.concatenate(outs, axis=-1)
    np.testing.assert_allclose(out[0], delayed(through(FIRST(), stems[0]), lead), atol=1e-6)
    np.testing.assert_array_equal(out[2], delayed(stems[2], lead))
    stage.clear()  # a new stream may have any latency again
    stage.set("vocals", Pedalboard([AddLatency(600), Gain(-3)]))
    assert stage.latency_samples == E + 600


def test_effects_cannot_be_added_to_a_stream_that_started_without_latency_for_them():
    """Without effects the stage adds no latency; adding a chain mid-stream would shift the output,
    so it is refused with an error that says what to do (the stream keeps going unchanged)."""
    stems, dry = stem_input(8 * E, seed=6)
    stage = EffectStage(STEMS, RATE, 2, E)
    for i in range(0, 4 * E, E):
        s, _ = stage.process(stems[..., i:i + E], dry[:, i:i + E])
        np.testing.assert_array_equal(s, stems[..., i:i + E])
    with pytest.raises(ValueError, match=r"(?i)while streaming.*budget"):
        stage.set("vocals", Pedalboard([Reverb()]))
    assert stage.latency_samples == 0 and stage.get("vocals") is None
    s, _ = stage.process(stems[..., 4 * E:5 * E], dry[:, 4 * E:5 * E])
    np.testing.assert_array_equal(s, stems[..., 4 * E:5 * E])
    stage.clear()
    stage.set("vocals", Pedalboard([Reverb()]))  # between streams: fine
    assert stage.latency_samples == E


def test_a_fixed_latency_budget_lets_effects_come_and_go_from_a_dry_start():
    n = 60 * E
    stems, dry = stem_input(n, seed=7)
    stage = EffectStage(STEMS, RATE, 2, E, latency_budget=300)
    lead = stage.latency_samples
    assert lead == E + 300 and stage.active  # constant, with or without effects
    with pytest.raises(ValueError, match=r"latency.*(budget|300)"):
        stage.set("vocals", Pedalboard([AddLatency(301)]))  # beyond the budget even between streams
    plan = {5: lambda: Pedalboard([Reverb()]), 9: lambda: Pedalboard([AddLatency(300), Gain(-6)]),
            10: lambda: None, 20: lambda: Pedalboard([Gain(3)])}
    out, out_dry, at = stream(stage, stems, dry, E, {i: ("vocals", make()) for i, make in plan.items()})
    assert stage.latency_samples == lead
    segments = [(0, lambda: None)] + [(at[i], plan[i]) for i in sorted(plan)]
    np.testing.assert_allclose(out[0], delayed(crossfaded(stems[0], segments), lead), atol=2e-5)
    np.testing.assert_array_equal(out[1:], delayed(stems[1:], lead))
    np.testing.assert_array_equal(out_dry, delayed(dry, lead))


# ------------------------------------------------------------------ item 9: inf/NaN from a chain
class NanOnce:
    """A plugin with pedalboard's call contract (process(input_array, sample_rate, buffer_size,
    reset), reset()) that halves its input, and returns NaN for one call once armed."""

    def __init__(self):
        self.armed = False
        self.resets = 0

    def process(self, input_array, sample_rate, buffer_size=8192, reset=True):
        if self.armed:
            self.armed = False
            return np.full_like(input_array, np.nan)
        return (0.5 * input_array).astype(np.float32)

    __call__ = process

    def reset(self):
        self.resets += 1


def test_a_nan_block_from_a_chain_becomes_a_short_fade_to_silence_and_the_chain_is_reset():
    n = 40 * E
    stems, dry = stem_input(n, seed=8)
    plugin = NanOnce()
    stage = EffectStage(STEMS, RATE, 2, E)
    stage.set("vocals", plugin)
    lead = stage.latency_samples
    resets = plugin.resets
    outs = []
    for k, i in enumerate(range(0, n, E)):
        plugin.armed = k == 12
        outs.append(stage.process(stems[..., i:i + E], dry[:, i:i + E]))
    out = np.concatenate([o[0] for o in outs], axis=-1)
    out_dry = np.concatenate([o[1] for o in outs], axis=-1)
    assert np.isfinite(out).all(), "NaN from the chain reached the output"
    np.testing.assert_array_equal(out[1:], delayed(stems[1:], lead))
    np.testing.assert_array_equal(out_dry, delayed(dry, lead))
    assert stage.nonfinite_blocks["vocals"] == 1 and stage.nonfinite_blocks.get("drums", 0) == 0
    assert plugin.resets > resets, "the chain was not reset"
    bad = 12 * E + lead  # where the bad block sounds
    good = delayed(0.5 * stems[0], lead)
    np.testing.assert_allclose(out[0, :, :bad], good[:, :bad], atol=1e-7)  # untouched before
    np.testing.assert_allclose(out[0, :, bad + E + XFADE:], good[:, bad + E + XFADE:], atol=1e-7)  # and after
    fade = out[0, :, bad:bad + E]
    assert np.abs(fade[:, 3 * E // 4:]).max() == 0.0, "not silent after the fade-out"
    assert np.abs(fade[:, 0] - good[:, bad - 1]).max() < 0.02, "a hard cut, not a fade"
    assert_no_gap_and_no_click(out[0, :, :bad], [good], lead, "before")
    step = np.abs(np.diff(out[0, :, bad - 1:bad + E + XFADE + 1], axis=1)).max()
    assert step < 0.02, f"a click of {step:.3f} around the bad block"


def test_a_real_plugin_blowing_up_once_recovers_after_its_reset():
    """Gain(+2000 dB) for one block drives a Chorus to inf/NaN; the Chorus keeps NaN in its state
    forever unless reset, so without the reset the stem would stay NaN."""
    n = 40 * E
    stems, dry = stem_input(n, seed=9)
    board = Pedalboard([Gain(0), Chorus()])
    stage = EffectStage(STEMS, RATE, 2, E)
    stage.set("bass", board)
    lead = stage.latency_samples
    outs = []
    for k, i in enumerate(range(0, n, E)):
        board[0].gain_db = 2000 if k == 10 else 0
        outs.append(stage.process(stems[..., i:i + E], dry[:, i:i + E])[0])
    out = np.concatenate(outs, axis=-1)
    assert np.isfinite(out).all(), "inf/NaN from the chain reached the output"
    assert stage.nonfinite_blocks["bass"] == 1
    np.testing.assert_array_equal(np.delete(out, 2, axis=0), delayed(np.delete(stems, 2, axis=0), lead))
    restart = 11 * E  # the chain, reset, starts again on the next block
    fresh = np.zeros_like(stems[2])
    fresh[:, restart:] = through(Pedalboard([Gain(0), Chorus()]), stems[2][:, restart:])
    after = restart + lead + XFADE
    np.testing.assert_allclose(out[2, :, after:], delayed(fresh, lead)[:, after:], atol=1e-6)
    before = 10 * E + lead
    np.testing.assert_allclose(out[2, :, :before], delayed(through(Pedalboard([Gain(0), Chorus()]), stems[2]),
                                                            lead)[:, :before], atol=1e-6)


# ------------------------------------------------------------------ through StemSeparator
@pytest.fixture
def sep(tmp_path):
    """Vocals = the input, the other stems silent (IdentityModel), as in tests/plugin."""
    cfg = streamer.load_config(write_yaml(tmp_path / "four.yaml", stems=STEMS, target=None,
                                          extra_model={"num_stems": 4}, chunk_size=4410))
    return StemSeparator(IdentityModel(4), cfg, latency="low")


def run_separator(sep, x, chunk, swaps, setter):
    """Stream x through sep in ``chunk`` calls; swaps {call: chain} applied through ``setter``; returns the
    joined output and, per swap, the effect stage's block the new chain starts on."""
    parts, at = [], {}
    for i, pos in enumerate(range(0, x.shape[1], chunk)):
        if i in swaps:
            at[i] = (sep._emitted // E) * E  # the stage has seen what the separator has run so far
            setter(swaps[i])
        parts.append(sep(x[:, pos:pos + chunk], RATE, buffer_size=chunk, reset=False))
    return np.concatenate(parts, axis=1), at


def separator_reference(sep, x, segments):
    """Expected main bus (= vocals) for a stream aligned with x: the effect stage sees x delayed by the
    engine's latency; segments are in the stage's input positions."""
    d = sep.engine.latency_samples
    u = np.concatenate([np.zeros((x.shape[0], d), np.float32), x], axis=1)
    return crossfaded(u, segments)[:, d:]


def test_separator_stream_with_chain_swaps_stays_aligned_and_continuous(sep):
    """Through the stage the separator owns (``sep._fx.set``, what ``_set_effects`` calls)."""
    x = tones(150 * E, seed=11)
    sep.stems["vocals"].effects = FIRST()  # before streaming: sets the stream's latency
    latency = sep.reported_latency_samples
    plan = {8: KINDS[1], 9: KINDS[3], 14: KINDS[2], 15: KINDS[0], 30: KINDS[5], 33: KINDS[1]}
    y, at = run_separator(sep, x, E, {i: make() for i, make in plan.items()}, lambda c: sep._fx.set("vocals", c))
    assert sep.reported_latency_samples == latency
    assert y.shape[1] == x.shape[1] - latency  # nothing lost, nothing repeated
    ref = separator_reference(sep, x, [(0, FIRST)] + [(at[i], plan[i]) for i in sorted(plan)])
    np.testing.assert_allclose(y, ref[:, :y.shape[1]], atol=2e-5)
    assert_no_gap_and_no_click(y, [ref], 0, "separator output")


def test_separator_nan_from_a_stem_chain_never_reaches_the_output(sep):
    x = tones(40 * E, seed=12)
    plugin = NanOnce()
    sep._fx.set("vocals", plugin)
    sep.reset()
    parts = []
    for k, pos in enumerate(range(0, x.shape[1], E)):
        plugin.armed = k == 15
        parts.append(sep(x[:, pos:pos + E], RATE, buffer_size=E, reset=False))
    y = np.concatenate(parts, axis=1)
    assert np.isfinite(y).all()
    assert sep._fx.nonfinite_blocks["vocals"] == 1


def test_end_to_end_effects_assignment_mid_stream(sep):
    """``sep.stems[name].effects = chain`` while streaming. Needs StemSeparator._set_effects to stop
    clearing the stream (it calls only ``self._fx.set(name, chain, live=self._emitted > 0)``)."""
    x = tones(100 * E, seed=13)
    sep.stems["vocals"].effects = FIRST()
    latency = sep.reported_latency_samples

    def assign(chain):
        sep.stems["vocals"].effects = chain

    plan = {6: KINDS[3], 7: KINDS[1], 12: KINDS[0], 20: KINDS[2]}
    y, at = run_separator(sep, x, 480, {i: make() for i, make in plan.items()}, assign)
    assert sep.reported_latency_samples == latency
    assert y.shape[1] == x.shape[1] - latency
    ref = separator_reference(sep, x, [(0, FIRST)] + [(at[i], plan[i]) for i in sorted(plan)])
    np.testing.assert_allclose(y, ref[:, :y.shape[1]], atol=2e-5)
    assert_no_gap_and_no_click(y, [ref], 0, "separator output")


def test_end_to_end_adding_effects_to_a_dry_stream_is_refused_not_shifted(sep):
    """Streaming without effects, then assigning one: refused (the output would shift by a block);
    the stream goes on unchanged. Needs the same ``_set_effects`` change (``live=``)."""
    x = tones(30 * E, seed=14)
    latency = sep.reported_latency_samples
    y = [sep(x[:, i:i + E], RATE, buffer_size=E, reset=False) for i in range(0, 10 * E, E)]
    with pytest.raises(ValueError, match=r"(?i)while streaming.*budget"):
        sep.stems["vocals"].effects = Pedalboard([Reverb()])
    assert sep.reported_latency_samples == latency and sep.stems["vocals"].effects is None
    y += [sep(x[:, i:i + E], RATE, buffer_size=E, reset=False) for i in range(10 * E, x.shape[1], E)]
    y = np.concatenate(y, axis=1)
    np.testing.assert_array_equal(y, x[:, :y.shape[1]])


def test_separator_reports_nonfinite_effect_blocks_per_stem():
    """The count the README documents is public on the separator."""
    import streamer
    from bridge import StemSeparator
    from streamer.assets import DEMO_CONFIG

    loaded = streamer.load_model(DEMO_CONFIG)
    sep = StemSeparator(loaded.model, loaded.config)
    assert sep.effects_nonfinite_blocks == {name: 0 for name in sep.stem_names}
