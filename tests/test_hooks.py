"""Exact properties of HookedWhisper on a tiny random Whisper (oracle: uninstrumented copy)."""

from __future__ import annotations

import pytest
import torch

from whisperlens.errors import ShapeError, SiteError
from whisperlens.hooks import HookedWhisper

IDS = torch.tensor([[50257, 400, 401, 402, 403], [50257, 10, 11, 12, 13]])


def _no_hooks_left(hooked: HookedWhisper) -> bool:
    return all(len(p._forward_hooks) == 0 for p in hooked.hook_points.values())


def test_instrumented_model_is_bitwise_identical(pair, feats):
    hooked, ref = pair
    with torch.no_grad():
        want = ref(input_features=feats, decoder_input_ids=IDS).logits
        want_enc = ref.model.encoder(feats).last_hidden_state
    assert torch.equal(hooked.forward(feats, IDS), want)
    assert torch.equal(hooked.encode(feats), want_enc)


def test_identity_hooks_everywhere_change_nothing(pair, feats):
    hooked, ref = pair
    with torch.no_grad():
        want = ref(input_features=feats, decoder_input_ids=IDS).logits
    names = [n for n in hooked.site_names() if "pattern" not in n]
    with hooked.edit(names, lambda rows, site: rows):
        got = hooked.forward(feats, IDS)
    assert torch.equal(got, want)
    assert _no_hooks_left(hooked)


def test_cached_residuals_match_transformers_hidden_states(pair, feats):
    hooked, ref = pair
    cache = hooked.run_with_cache(feats)
    with torch.no_grad():
        out = ref.model.encoder(feats, output_hidden_states=True)
    hs = out.hidden_states
    assert torch.equal(cache["encoder.hook_embed"], hs[0])
    assert torch.equal(cache["encoder.blocks.0.hook_resid_pre"], hs[0])
    assert torch.equal(cache["encoder.blocks.0.hook_resid_post"], hs[1])
    assert torch.equal(cache["encoder.blocks.1.hook_resid_pre"], hs[1])
    assert torch.equal(cache["encoder.hook_ln_post"], out.last_hidden_state)


def test_resid_mid_and_attn_out_match_manual_computation(pair, feats):
    hooked, ref = pair
    cache = hooked.run_with_cache(feats)
    layer = ref.model.encoder.layers[1]
    pre = cache["encoder.blocks.1.hook_resid_pre"]
    with torch.no_grad():
        attn, _ = layer.self_attn(hidden_states=layer.self_attn_layer_norm(pre))
        mid = pre + attn
        mlp = layer.fc2(layer.activation_fn(layer.fc1(layer.final_layer_norm(mid))))
    torch.testing.assert_close(cache["encoder.blocks.1.hook_attn_out"], attn, rtol=0, atol=1e-6)
    torch.testing.assert_close(cache["encoder.blocks.1.hook_resid_mid"], mid, rtol=0, atol=1e-6)
    torch.testing.assert_close(cache["encoder.blocks.1.hook_mlp_out"], mlp, rtol=0, atol=1e-6)
    torch.testing.assert_close(
        cache["encoder.blocks.1.hook_resid_post"], mid + mlp, rtol=0, atol=1e-6
    )


@pytest.mark.parametrize(
    "site",
    [
        "encoder.blocks.0.hook_resid_mid",
        "encoder.blocks.1.hook_mlp_out",
        "decoder.blocks.0.hook_resid_mid_cross",
        "decoder.blocks.1.hook_resid_post",
    ],
)
def test_patching_own_clean_value_reproduces_clean_run(pair, feats, site):
    hooked, _ = pair
    clean = hooked.run_with_cache(feats, names=[site], decoder_input_ids=IDS)
    with hooked.patch(site, clean[site]):
        patched = hooked.forward(feats, IDS)
    assert torch.equal(patched, clean.logits)


def test_zero_steering_vector_changes_nothing(pair, feats):
    hooked, _ = pair
    clean = hooked.forward(feats, IDS)
    sites = hooked.site_names("encoder")
    sites = [s for s in sites if "pattern" not in s]
    with hooked.steer(sites, torch.zeros(hooked.d_model), strength=3.0):
        steered = hooked.forward(feats, IDS)
    assert torch.equal(steered, clean)


def test_patching_frames_changes_only_those_frames(pair, feats):
    hooked, _ = pair
    site = "encoder.blocks.0.hook_resid_post"
    clean = hooked.run_with_cache(feats, names=[site])[site]
    value = torch.full((11, hooked.d_model), 7.0)
    with hooked.patch(site, value, frames=slice(10, 21)):
        patched = hooked.run_with_cache(feats, names=[site])[site]
    changed = (patched != clean).any(dim=-1).any(dim=0)
    assert changed.nonzero().squeeze(-1).tolist() == list(range(10, 21))
    assert torch.equal(patched[:, 10:21], value.expand(2, 11, -1))


def test_steer_adds_exactly_the_vector_on_selected_frames(pair, feats):
    hooked, _ = pair
    site = "encoder.blocks.1.hook_resid_mid"
    clean = hooked.run_with_cache(feats, names=[site])[site]
    v = torch.randn(hooked.d_model)
    with hooked.steer(site, v, strength=2.5, frames=[3, 5]):
        got = hooked.run_with_cache(feats, names=[site])[site]
    assert torch.equal(got[:, [3, 5]], clean[:, [3, 5]] + 2.5 * v)
    assert torch.equal(got[:, 6:], clean[:, 6:])


def test_ablate_zero_and_mean(pair, feats):
    hooked, _ = pair
    site = "encoder.blocks.0.hook_attn_out"
    clean = hooked.run_with_cache(feats, names=[site])[site]
    with hooked.ablate(site, "zero", frames=slice(0, 4)):
        z = hooked.run_with_cache(feats, names=[site])[site]
    assert torch.equal(z[:, :4], torch.zeros_like(z[:, :4]))
    assert torch.equal(z[:, 4:], clean[:, 4:])
    with hooked.ablate(site, "mean"):
        m = hooked.run_with_cache(feats, names=[site])[site]
    torch.testing.assert_close(m, clean.mean(dim=1, keepdim=True).expand_as(clean))


def test_hooks_removed_when_body_raises(pair, feats):
    hooked, _ = pair
    with (
        pytest.raises(RuntimeError, match="boom"),
        hooked.patch("encoder.blocks.0.hook_resid_post", torch.zeros(hooked.d_model)),
        hooked.steer("decoder.blocks.0.hook_resid_pre", torch.ones(hooked.d_model)),
    ):
        raise RuntimeError("boom")
    assert _no_hooks_left(hooked)
    with (
        pytest.raises(ShapeError),
        hooked.patch("encoder.blocks.0.hook_resid_post", torch.zeros(3, 3)),
    ):
        hooked.encode(feats)
    assert _no_hooks_left(hooked)


def test_wrong_shape_patch_value_names_expected_shapes(pair, feats):
    hooked, _ = pair
    bad = torch.zeros(12, hooked.d_model)
    site = "encoder.blocks.0.hook_resid_post"
    with (
        pytest.raises(ShapeError, match=r"n_sel=11"),
        hooked.patch(site, bad, frames=slice(10, 21)),
    ):
        hooked.encode(feats)


def test_unknown_site_suggests_nearest(pair):
    hooked, _ = pair
    with pytest.raises(SiteError, match="encoder.blocks.1.hook_resid_post"):
        hooked.sites("encoder.blocks.1.hook_resid_pots")
    with pytest.raises(SiteError):
        hooked.sites("encoder.blocks.9.hook_resid_post")


def test_decoder_patch_acts_identically_in_cached_generation_and_teacher_forcing(pair, feats):
    hooked, _ = pair
    site, v = "decoder.blocks.1.hook_resid_mid", torch.randn(hooked.d_model) * 5
    with hooked.steer(site, v, frames=[2, 3]):
        new = hooked.generate(
            feats[:1], max_new_tokens=6, do_sample=False, decoder_input_ids=IDS[:1, :1]
        )
        full = torch.cat([IDS[:1, :1], new[:, -6:]], dim=1)  # generate strips the prompt
        tf_logits = hooked.forward(feats[:1], full[:, :-1])
    assert torch.equal(tf_logits.argmax(-1)[0], full[0, 1:])
    plain = hooked.forward(feats[:1], full[:, :-1])
    assert not torch.equal(plain.argmax(-1)[0], full[0, 1:])  # the steer mattered


def test_batched_equals_unbatched(pair, feats):
    hooked, _ = pair
    site = "encoder.blocks.1.hook_resid_post"
    both = hooked.run_with_cache(feats, names=[site])[site]
    one = hooked.run_with_cache(feats[1:], names=[site])[site]
    torch.testing.assert_close(both[1:], one, rtol=1e-5, atol=1e-5)


def test_attention_pattern_matches_manual_softmax(pair, feats):
    hooked, ref = pair
    name = "encoder.blocks.0.attn.hook_pattern"
    cache = hooked.run_with_cache(feats[:1], names=[name, "encoder.blocks.0.hook_resid_pre"])
    pattern = cache[name]
    attn = ref.model.encoder.layers[0].self_attn
    x = ref.model.encoder.layers[0].self_attn_layer_norm(cache["encoder.blocks.0.hook_resid_pre"])
    h, dh = attn.num_heads, attn.head_dim
    with torch.no_grad():
        q = (attn.q_proj(x) * attn.scaling).view(1, -1, h, dh).transpose(1, 2)
        k = attn.k_proj(x).view(1, -1, h, dh).transpose(1, 2)
        want = torch.softmax(q @ k.transpose(-1, -2), dim=-1)
    assert pattern.shape == (1, h, 1500, 1500)
    torch.testing.assert_close(pattern, want, rtol=1e-4, atol=1e-6)
    assert hooked.model.config._attn_implementation != "eager"  # restored afterwards


def test_cache_frames_seconds_and_roundtrip(pair, feats, tmp_path):
    hooked, _ = pair
    cache = hooked.run_with_cache(feats, frames=slice(0, 100))
    full = hooked.run_with_cache(feats)
    site = "encoder.blocks.1.hook_resid_post"
    assert cache[site].shape == (2, 100, hooked.d_model)
    sub = full.seconds(0.1, 0.2)  # frames 5..9
    assert torch.equal(sub[site], full[site][:, 5:10])
    assert torch.equal(cache.frames([5, 6, 7, 8, 9])[site], sub[site])
    path = cache.save(tmp_path / "acts.safetensors")
    back = type(cache).load(path)
    assert list(back) == list(cache)
    assert torch.equal(back[site], cache[site])
    assert torch.equal(back.frame_index, torch.arange(100))
    assert back.stack().shape == (2, 2, 100, hooked.d_model)


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "True False"), ({"WHISPERLENS_NO_MALLOC_TUNING": "1"}, "False False")],
)
def test_allocator_tuning_applies_once_and_can_be_disabled(env, expected):
    import os
    import subprocess
    import sys

    code = "from whisperlens._perf import tune_allocator as t; print(t(), t())"
    environ = {k: v for k, v in os.environ.items() if k != "WHISPERLENS_NO_MALLOC_TUNING"}
    out = subprocess.run(
        [sys.executable, "-c", code],
        env={**environ, **env},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert out == expected


def test_frame_selection_leaves_attention_patterns_whole(pair, feats):
    hooked, _ = pair
    names = ["encoder.blocks.0.attn.hook_pattern", "encoder.blocks.0.hook_resid_pre"]
    cache = hooked.run_with_cache(feats[:1], names=names, frames=[1])
    assert cache[names[0]].shape == (1, hooked.n_heads, 1500, 1500)  # not head 1 alone
    assert cache[names[1]].shape == (1, 1, hooked.d_model)


def test_hook_points_are_built_from_the_site_table(pair):
    from whisperlens.instrument import HookPoint

    hooked, _ = pair
    inner = hooked.model.model
    assert list(hooked.hook_points) == hooked.site_names()
    for site in hooked.sites(hooked.site_names()):
        assert inner.get_submodule(site.module_path) is hooked.hook_points[site.name]
    every = [m for m in inner.modules() if isinstance(m, HookPoint)]
    assert len(every) == len(hooked.hook_points) == len({id(m) for m in every})
    cross = inner.get_submodule("decoder.layers.1.encoder_attn.hook_pattern")
    assert cross is hooked.hook_points["decoder.blocks.1.cross_attn.hook_pattern"]
