"""HookedWhisper and the core CLI on the real packaged tiny.en."""

from __future__ import annotations

import json
import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from whisperlens.cache import ActivationCache
from whisperlens.cli import main
from whisperlens.decoding import DecodeOptions, transcribe
from whisperlens.features import log_mel
from whisperlens.hooks import HookedWhisper

pytestmark = pytest.mark.integration
SENTENCE = "the quick brown fox jumps over the lazy dog"


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    if shutil.which("espeak-ng") is None:
        pytest.fail(
            "espeak-ng is not installed: run `make test` as root, or apt-get install espeak-ng"
        )
    path = tmp_path_factory.mktemp("audio") / "fox.wav"
    subprocess.run(["espeak-ng", "-w", str(path), SENTENCE], check=True)
    return path


@pytest.fixture(scope="module")
def hooked(tiny_en):
    return HookedWhisper(tiny_en)


def _audio(path):
    from whisperlens.audio import load_audio

    return load_audio(path)


def test_cache_matches_transformers_hidden_states(hooked, clip):
    audio = _audio(clip)
    cache = hooked.run_with_cache(audio, names="encoder.blocks.*.hook_resid_post")
    feats = log_mel(hooked.loaded, audio)
    with torch.no_grad():
        hs = hooked.model.model.encoder(feats, output_hidden_states=True).hidden_states
    for i in range(hooked.n_layers - 1):  # the last hidden state is after the final LayerNorm
        assert torch.equal(cache[f"encoder.blocks.{i}.hook_resid_post"], hs[i + 1])


def test_interventions_act_in_generation(hooked, clip):
    audio = _audio(clip)
    clean = transcribe(hooked, audio)[0].text
    assert "fox" in clean.lower()
    with hooked.edit("encoder.blocks.*.hook_resid_post", lambda rows, site: rows):
        assert transcribe(hooked, audio)[0].text == clean
    with hooked.ablate("encoder.blocks.1.hook_resid_post", "zero"):  # it then loops: cap it
        [ablated] = transcribe(hooked, audio, DecodeOptions(max_new_tokens=40))
    assert ablated.text != clean and ablated.truncated
    assert transcribe(hooked, audio)[0].text == clean  # hooks gone


def test_cache_cli_writes_loadable_safetensors(clip, tmp_path, capsys):
    out = tmp_path / "acts.safetensors"
    code = main(
        [
            "cache",
            str(clip),
            "--model",
            "tiny.en",
            "--sites",
            "encoder.blocks.0.hook_resid_post",
            "encoder.hook_ln_post",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    cache = ActivationCache.load(out)
    assert list(cache) == ["encoder.blocks.0.hook_resid_post", "encoder.hook_ln_post"]
    n_real = int(np.ceil(sf.info(str(clip)).duration / 0.02))
    assert cache["encoder.hook_ln_post"].shape == (1, n_real, 384)
    assert summary["shape"] == [1, n_real, 384]


def test_cli_errors_are_clear(clip, tmp_path, capsys):
    code = main(
        [
            "cache",
            str(clip),
            "--model",
            "tiny.en",
            "--sites",
            "encoder.blocks.0.hook_resid_pots",
            "--out",
            str(tmp_path / "x.safetensors"),
        ]
    )
    assert code == 2
    err = capsys.readouterr().err
    assert "unknown hook site" in err and "encoder.blocks.0.hook_resid_post" in err
    assert not (tmp_path / "x.safetensors").exists()
    assert (
        main(["cache", str(tmp_path / "missing.wav"), "--out", str(tmp_path / "y.safetensors")])
        == 2
    )
    assert "missing.wav" in capsys.readouterr().err


def test_sites_cli_lists_every_site(capsys):
    assert main(["sites", "--model", "tiny.en"]) == 0
    names = capsys.readouterr().out.split()
    assert "encoder.blocks.3.hook_resid_mid" in names
    assert "decoder.blocks.3.hook_cross_attn_out" in names
    assert "encoder.blocks.4.hook_resid_post" not in names
