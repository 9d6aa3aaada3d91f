"""Interventions as data, applied through HookedWhisper.apply, on a tiny random Whisper.

Oracles: plain PyTorch forward hooks on the blocks of an uninstrumented deep copy
(steering), hand-written projections (clamp), and the ergonomic contexts (apply).
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from whisperlens.errors import ShapeError
from whisperlens.hooks import HookedWhisper
from whisperlens.interventions import (
    KINDS,
    Intervention,
    InterventionError,
    Span,
    as_frames,
    load_payloads,
    save_payloads,
)

IDS = torch.tensor([[50257, 400, 401, 402, 403], [50257, 10, 11, 12, 13]])
RESID = "encoder.blocks.{}.hook_resid_post"


def _no_hooks_left(hooked: HookedWhisper) -> bool:
    return all(len(p._forward_hooks) == 0 for p in hooked.hook_points.values())


def _vec(seed: int, d: int) -> torch.Tensor:
    return torch.randn(d, generator=torch.Generator().manual_seed(seed))


# -- the record -----------------------------------------------------------------------
EXAMPLES = [
    Intervention("patch", "encoder.blocks.0.hook_resid_post", frames=Span(10, 21), payload="p"),
    Intervention("steer", "encoder.blocks.*.hook_resid_post", payload="v", strength=-2.5),
    Intervention("ablate", "decoder.blocks.1.hook_mlp_out", frames=(3, 5)),
    Intervention("ablate", "encoder.hook_embed", frames=Span(7), ablation="mean", payload="m"),
    Intervention("clamp", "decoder.blocks.0.hook_resid_mid", payload="d.safetensors#x", strength=3),
]


@pytest.mark.parametrize("iv", EXAMPLES, ids=lambda iv: iv.kind)
def test_to_dict_from_dict_round_trips_through_json(iv):
    text = json.dumps(iv.to_dict())
    back = Intervention.from_dict(json.loads(text))
    assert back == iv
    assert json.loads(text)["kind"] == iv.kind


def test_examples_cover_every_kind():
    assert {iv.kind for iv in EXAMPLES} == set(KINDS)


def test_frames_canonical_forms():
    assert as_frames(slice(10, 21)) == Span(10, 21)
    assert as_frames(slice(5, None)) == Span(5, None)
    assert as_frames(range(0, 6, 2)) == (0, 2, 4)
    assert as_frames([3, 5]) == (3, 5)
    assert as_frames(torch.tensor([False, True, True])) == (1, 2)
    assert Intervention("ablate", "encoder.hook_embed", frames=[1, 2]).frames == (1, 2)  # type: ignore[arg-type]
    assert Intervention("ablate", "encoder.hook_embed", frames=Span(1, 2)).to_dict()["frames"] == {
        "start": 1,
        "stop": 2,
    }


def test_from_dict_refuses_unknown_keys():
    with pytest.raises(InterventionError, match="unknown intervention keys"):
        Intervention.from_dict({"kind": "steer", "site": "encoder.hook_embed", "vector": "v"})


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"kind": "shift", "payload": "v"}, r"unknown kind 'shift'.*encoder\.blocks\.0"),
        ({"kind": "steer", "payload": "v", "strength": math.nan}, r"strength nan.*blocks\.0"),
        ({"kind": "steer", "payload": "v", "strength": math.inf}, r"strength inf.*blocks\.0"),
        ({"kind": "steer"}, "needs a payload"),
        ({"kind": "patch", "payload": "v", "strength": 2.0}, "takes no strength"),
        ({"kind": "ablate", "ablation": "median"}, "unknown ablation"),
        ({"kind": "ablate", "payload": "m"}, "zero ablation takes no payload"),
    ],
)
def test_intervention_validation(kwargs, match):
    with pytest.raises(InterventionError, match=match):
        Intervention(site="encoder.blocks.0.hook_resid_post", **kwargs)


@pytest.mark.parametrize(
    "frames", [Span(60, 0), Span(2000, 2010), Span(1490, 1510), (), (-1, 3), (1500,), Span(4, 4)]
)
def test_bad_encoder_frames_name_the_site_and_the_window(frames):
    site = "encoder.blocks.1.hook_resid_mid"
    with pytest.raises(ShapeError, match=r"encoder\.blocks\.1\.hook_resid_mid.*0\.\.1499"):
        Intervention("ablate", site, frames=frames)


# -- applying --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "frames",
    [slice(2000, 2010), slice(60, 0), slice(5, 5), [], torch.zeros(1500, dtype=torch.bool)],
)
def test_ergonomic_layer_refuses_bad_encoder_frames(pair, frames):
    hooked, _ = pair
    v = torch.ones(hooked.d_model)
    site = "encoder.blocks.0.hook_attn_out"
    for make in (
        lambda: hooked.steer(site, v, frames=frames),
        lambda: hooked.patch(site, v, frames=frames),
        lambda: hooked.ablate(site, frames=frames),
        lambda: hooked.clamp(site, v, 1.0, frames=frames),
        lambda: hooked.edit(site, lambda rows, s: rows, frames=frames),
    ):
        with pytest.raises(ShapeError, match=r"encoder\.blocks\.0\.hook_attn_out.*0\.\.1499"):
            make()
    with pytest.raises(ShapeError, match="0..1499"):
        hooked.run_with_cache(torch.zeros(1, 80, 3000), names=[site], frames=frames)


def test_negative_decoder_positions_refused(pair):
    hooked, _ = pair
    with pytest.raises(ShapeError, match=r"decoder\.blocks\.0\.hook_resid_pre.*0 or more"):
        hooked.steer("decoder.blocks.0.hook_resid_pre", torch.ones(hooked.d_model), frames=[-1])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_payloads_and_strengths_refused(pair, bad):
    hooked, _ = pair
    site = "encoder.blocks.0.hook_resid_post"
    v = torch.ones(hooked.d_model)
    v[3] = bad
    with pytest.raises(InterventionError, match=r"encoder\.blocks\.0\.hook_resid_post has NaN"):
        hooked.steer(site, v)
    with pytest.raises(InterventionError, match=r"encoder\.blocks\.0\.hook_resid_post"):
        hooked.apply(Intervention("patch", site, payload="v"), {"v": v})
    with pytest.raises(InterventionError, match=r"strength .* is not finite"):
        hooked.steer(site, torch.ones(hooked.d_model), strength=bad)
    assert _no_hooks_left(hooked)


def test_payload_shape_checked_before_installing(pair):
    hooked, _ = pair
    site = "encoder.blocks.0.hook_resid_post"
    with pytest.raises(ShapeError, match=r"n_sel=11"):
        hooked.apply(
            Intervention("patch", site, frames=Span(10, 21), payload="v"),
            {"v": torch.zeros(12, hooked.d_model)},
        )
    with pytest.raises(ShapeError, match=rf"\[d\]=\[{hooked.d_model}\]"):
        hooked.steer(site, torch.zeros(hooked.d_model + 1))
    with pytest.raises(InterventionError, match="zero norm"):
        hooked.clamp(site, torch.zeros(hooked.d_model), 1.0)
    with pytest.raises(InterventionError, match=r"'w' for encoder.*keys: \['v'\]"):
        hooked.apply(Intervention("steer", site, payload="w"), {"v": torch.zeros(hooked.d_model)})
    assert _no_hooks_left(hooked)


def test_apply_equals_nested_ergonomic_contexts(pair, feats):
    hooked, _ = pair
    d = hooked.d_model
    p, v, m, c = (_vec(i, d) for i in range(4))
    ivs = [
        Intervention("patch", "encoder.blocks.0.hook_attn_out", frames=Span(100, 200), payload="p"),
        Intervention("steer", "encoder.blocks.*.hook_resid_post", payload="v", strength=1.5),
        Intervention("ablate", "encoder.blocks.1.hook_mlp_out", frames=(1, 4, 9)),
        Intervention("ablate", "decoder.blocks.0.hook_attn_out", ablation="mean", payload="m"),
        Intervention("clamp", "decoder.blocks.1.hook_resid_mid", frames=Span(2), payload="c"),
        Intervention("steer", "encoder.blocks.1.hook_resid_post", payload="v", strength=-0.5),
        Intervention("patch", "encoder.blocks.1.hook_resid_post", frames=(0, 7), payload="p"),
    ]
    with hooked.apply(ivs, {"p": p, "v": v, "m": m, "c": c}):
        got = hooked.forward(feats, IDS)
    with (
        hooked.patch("encoder.blocks.0.hook_attn_out", p, frames=slice(100, 200)),
        hooked.steer("encoder.blocks.*.hook_resid_post", v, strength=1.5),
        hooked.ablate("encoder.blocks.1.hook_mlp_out", "zero", frames=[1, 4, 9]),
        hooked.ablate("decoder.blocks.0.hook_attn_out", "mean", mean=m),
        hooked.clamp("decoder.blocks.1.hook_resid_mid", c, 1.0, frames=slice(2, None)),
        hooked.steer("encoder.blocks.1.hook_resid_post", v, strength=-0.5),
        hooked.patch("encoder.blocks.1.hook_resid_post", p, frames=[0, 7]),
    ):
        want = hooked.forward(feats, IDS)
    assert torch.equal(got, want)
    assert not torch.equal(got, hooked.forward(feats, IDS))
    assert _no_hooks_left(hooked)


def _add_on(frames: slice, vector: torch.Tensor):
    def hook(_module, _args, output):
        out = output.clone()
        out[:, frames] = output[:, frames] + vector
        return out

    return hook


@pytest.mark.parametrize("stack", ["encoder", "decoder"])
def test_steer_equals_plain_forward_hooks_on_uninstrumented_blocks(pair, feats, stack):
    """Oracle: forward hooks on ``model.model.<stack>.layers[i]`` of an uninstrumented copy."""
    hooked, ref = pair
    v = _vec(7, hooked.d_model)
    strength, span = 3.0, (Span(10, 50) if stack == "encoder" else Span(1, 3))
    iv = Intervention("steer", f"{stack}.blocks.*.hook_resid_post", span, "v", strength)
    with hooked.apply([iv], {"v": v}):
        got = hooked.forward(feats, IDS)
    layers = getattr(ref.model, stack).layers
    handles = [
        layer.register_forward_hook(_add_on(slice(span.start, span.stop), strength * v))
        for layer in layers
    ]
    try:
        with torch.no_grad():
            want = ref(input_features=feats, decoder_input_ids=IDS).logits
    finally:
        for h in handles:
            h.remove()
    assert torch.equal(got, want)


def test_clamp_sets_the_projection_and_keeps_the_orthogonal_part(pair, feats):
    hooked, _ = pair
    site = "encoder.blocks.1.hook_resid_mid"
    direction = _vec(3, hooked.d_model) * 4.0  # not unit: clamp normalises it
    d = direction / direction.norm()
    clean = hooked.run_with_cache(feats, names=[site])[site]
    with hooked.clamp(site, direction, -2.0, frames=slice(20, 30)):
        got = hooked.run_with_cache(feats, names=[site])[site]
    proj = got[:, 20:30] @ d
    torch.testing.assert_close(proj, torch.full_like(proj, -2.0), rtol=0, atol=1e-5)

    def orthogonal(x: torch.Tensor) -> torch.Tensor:
        return x - (x @ d).unsqueeze(-1) * d

    torch.testing.assert_close(
        orthogonal(got[:, 20:30]), orthogonal(clean[:, 20:30]), rtol=0, atol=1e-5
    )
    assert torch.equal(got[:, :20], clean[:, :20])
    assert torch.equal(got[:, 30:], clean[:, 30:])
    assert not torch.allclose(clean[:, 20:30] @ d, torch.full((2, 10), -2.0), atol=1e-2)


def test_payload_file_references_resolve_relative_to_base_dir(pair, feats, tmp_path):
    hooked, _ = pair
    v, w = _vec(11, hooked.d_model), _vec(12, hooked.d_model)
    vectors = tmp_path / "vectors"
    vectors.mkdir()
    save_payloads(vectors / "pca-frames.safetensors", {"vector": v, "other": w})
    save_payloads(vectors / "one.safetensors", {"only": w})
    back = load_payloads(vectors / "pca-frames.safetensors")
    assert set(back) == {"vector", "other"} and torch.equal(back["vector"], v)
    assert (vectors / "one.safetensors").read_bytes()[:1] != b"\x80"  # not a pickle
    site = "encoder.blocks.0.hook_resid_post"
    refs = [
        Intervention("steer", site, payload="vectors/pca-frames.safetensors#vector", strength=2),
        Intervention("steer", site, payload="vectors/one.safetensors", strength=-1),
    ]
    with hooked.apply(refs, base_dir=tmp_path):
        got = hooked.forward(feats, IDS)
    with hooked.steer(site, v, strength=2.0), hooked.steer(site, w, strength=-1.0):
        want = hooked.forward(feats, IDS)
    assert torch.equal(got, want)
    with pytest.raises(InterventionError, match=r"no tensor 'missing'.*\['other', 'vector'\]"):
        hooked.apply(
            Intervention("steer", site, payload="vectors/pca-frames.safetensors#missing"),
            base_dir=tmp_path,
        )
    with pytest.raises(InterventionError, match="holds 2 tensors"):
        hooked.apply(
            Intervention("steer", site, payload="vectors/pca-frames.safetensors"),
            base_dir=tmp_path,
        )
    with pytest.raises(InterventionError, match="does not exist"):
        hooked.apply(Intervention("steer", site, payload="nope.safetensors"), base_dir=tmp_path)


def test_contexts_are_reusable(pair, feats):
    hooked, _ = pair
    clean = hooked.forward(feats, IDS)
    v = _vec(5, hooked.d_model)
    for ctx in (
        hooked.steer("encoder.blocks.0.hook_resid_post", v, strength=2.0),
        hooked.apply(Intervention("ablate", "decoder.blocks.0.hook_mlp_out")),
        hooked.edit("encoder.blocks.1.hook_attn_out", lambda rows, site: rows * 0.5),
    ):
        with ctx:
            first = hooked.forward(feats, IDS)
        assert _no_hooks_left(hooked)
        with ctx:
            second = hooked.forward(feats, IDS)
        assert torch.equal(first, second)
        assert not torch.equal(first, clean)
        assert _no_hooks_left(hooked)


def test_hooks_removed_after_exceptions(pair, feats):
    hooked, _ = pair
    ivs = [
        Intervention("steer", "encoder.blocks.*.hook_resid_post", payload="v"),
        Intervention("patch", "decoder.blocks.0.hook_resid_pre", payload="v"),
    ]
    ctx = hooked.apply(ivs, {"v": torch.ones(hooked.d_model)})
    with pytest.raises(RuntimeError, match="boom"), ctx:
        assert not _no_hooks_left(hooked)
        raise RuntimeError("boom")
    assert _no_hooks_left(hooked)
    wrong_batch = torch.zeros(3, 1500, hooked.d_model)  # the batch is 2: fails inside forward
    with pytest.raises(ShapeError), hooked.patch("encoder.blocks.0.hook_resid_post", wrong_batch):
        hooked.forward(feats, IDS)
    assert _no_hooks_left(hooked)


@pytest.mark.parametrize(
    "site", ["decoder.blocks.*.hook_resid_mid", "decoder.hook_embed", "decoder.hook_ln_post"]
)
def test_open_decoder_span_acts_identically_in_cached_generation(pair, feats, site):
    hooked, _ = pair
    iv = Intervention("steer", site, Span(2), "v", strength=5.0)
    with hooked.apply(iv, {"v": _vec(9, hooked.d_model)}):
        new = hooked.generate(
            feats[:1], max_new_tokens=6, do_sample=False, decoder_input_ids=IDS[:1, :1]
        )
        full = torch.cat([IDS[:1, :1], new[:, -6:]], dim=1)
        tf_logits = hooked.forward(feats[:1], full[:, :-1])
    assert torch.equal(tf_logits.argmax(-1)[0], full[0, 1:])
    plain = hooked.forward(feats[:1], full[:, :-1])
    assert not torch.equal(plain.argmax(-1)[0], full[0, 1:])  # the steer mattered
