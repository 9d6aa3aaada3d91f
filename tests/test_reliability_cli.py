"""Reliability of the command line: bad outputs, bad spans, bad inputs, quiet output."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from whisperlens import _io
from whisperlens.cli import main
from whisperlens.errors import WhisperlensError

SR = 16_000


def _tone(path: Path, seconds: float = 1.0) -> Path:
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), SR)
    return path


def _tree(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*")}


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "whisperlens.cli", *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )


# ---------------------------------------------------------------- bad --out, every command

# name -> (argv before --out, output kind); "{clip}" is a 1 s tone
_COMMANDS = {
    "cache": (["cache", "{clip}", "--sites", "encoder.hook_ln_post"], "file", ".safetensors"),
    "synth": (["stimuli", "synth", "--text", "cat", "--engine", "espeak"], "file", ".wav"),
    "baseline": (["baseline", "--words", "minimal", "--engine", "espeak"], "dir", ""),
    "evaluate": (["evaluate", "--dataset", "asterisk-en", "--n-items", "2"], "dir", ""),
    "demo": (["demo", "--engine", "espeak"], "dir", ""),
    "patch": (["patch", "a", "--n-pairs", "1", "--workers", "1"], "dir", ""),
    "steer": (["steer", "--concept", "love_hate", "--workers", "1"], "dir", ""),
    "sae-run": (["sae", "run", "--scale", "tiny", "--workers", "1"], "dir", ""),
    "sae-extract": (["sae", "extract", "--corpus", "tiny", "--workers", "1"], "dir", ""),
    "reproduce": (["reproduce", "--scale", "tiny", "--workers", "1"], "dir", ""),
}
_BAD_OUTS = ("under-file", "under-proc", "existing-other")


def _bad_out(kind: str, case: str, suffix: str, root: Path) -> str:
    if case == "under-file":
        (root / "plain.txt").write_text("not a directory\n")
        return str(root / "plain.txt" / f"out{suffix}")
    if case == "under-proc":
        return f"/proc/whisperlens-no-such-dir/out{suffix}"
    if kind == "file":  # an existing directory where a file goes
        (root / f"taken{suffix}").mkdir()
        return str(root / f"taken{suffix}")
    (root / "taken").write_text("a file where a directory goes\n")
    return str(root / "taken")


@pytest.mark.parametrize("case", _BAD_OUTS)
@pytest.mark.parametrize("command", list(_COMMANDS))
def test_bad_out_is_one_line_exit_2_and_writes_nothing(command: str, case: str, tmp_path: Path):
    argv, kind, suffix = _COMMANDS[command]
    work = tmp_path / "work"
    work.mkdir()
    clip = _tone(tmp_path / "clip.wav")
    out = _bad_out(kind, case, suffix, work)
    before = _tree(work)
    env = {**os.environ, "WHISPERLENS_CACHE": str(tmp_path / "cache"), "HF_HUB_OFFLINE": "1"}
    proc = _cli(*[a.format(clip=clip) for a in argv], "--out", out, env=env)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(lines) == 1 and lines[0].startswith("whisperlens: error:"), proc.stderr
    assert out in lines[0]
    assert _tree(work) == before
    assert not (tmp_path / "cache" / "stimuli").exists()  # no work was done


def test_synth_json_to_bad_path_is_refused_before_the_wav(tmp_path: Path):
    (tmp_path / "plain.txt").write_text("x")
    out = tmp_path / "cat.wav"
    env = {**os.environ, "WHISPERLENS_CACHE": str(tmp_path / "cache")}
    bad = str(tmp_path / "plain.txt" / "meta.json")
    argv = ["stimuli", "synth", "--text", "cat", "--engine", "espeak", "--out", str(out)]
    proc = _cli(*argv, "--json", bad, env=env)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().startswith("whisperlens: error:") and bad in proc.stderr
    assert not out.exists()


# ---------------------------------------------------------------- the helpers


def test_check_output_helpers(tmp_path: Path):
    (tmp_path / "f").write_text("x")
    assert _io.check_output_file(tmp_path / "new" / "deeper" / "a.json") == (
        tmp_path / "new" / "deeper" / "a.json"
    )
    assert not (tmp_path / "new").exists()
    assert _io.check_output_dir(tmp_path / "run") == tmp_path / "run"
    assert _io.check_output_dir(tmp_path) == tmp_path
    for bad in (tmp_path / "f" / "a.json", tmp_path, Path("/proc/nope/a.json")):
        with pytest.raises(WhisperlensError, match="cannot write|existing directory"):
            _io.check_output_file(bad)
    for bad in (tmp_path / "f", tmp_path / "f" / "run", Path("/proc/nope/run")):
        with pytest.raises(WhisperlensError, match="cannot write|existing file"):
            _io.check_output_dir(bad)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]  # probes removed


def test_atomic_writes_follow_the_umask(tmp_path: Path):
    old = os.umask(0o022)
    try:
        _io.atomic_write_text(tmp_path / "a.txt", "x")
        (tmp_path / "b.txt").write_text("x")
        os.umask(0o027)
        _io.atomic_write_text(tmp_path / "c.txt", "x")
    finally:
        os.umask(old)
    modes = [stat.S_IMODE((tmp_path / n).stat().st_mode) for n in ("a.txt", "b.txt", "c.txt")]
    assert modes == [0o644, 0o644, 0o640]


# ---------------------------------------------------------------- cache spans


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("0.8", "0.5", "before its start"),
        ("-0.5", "0.5", "negative"),
        ("0.5", "1.5", "1.00 s long"),
        ("0.2", "40", "1.00 s long"),
        ("1.2", "1.5", "1.00 s long"),
    ],
)
def test_cache_span_errors(start, end, message, tmp_path, capsys, monkeypatch):
    clip = _tone(tmp_path / "clip.wav")
    out = tmp_path / "acts.safetensors"
    monkeypatch.setattr("whisperlens.hooks.HookedWhisper.from_pretrained", _no_model)
    code = main(["cache", str(clip), "--out", str(out), "--start", start, "--end", end])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and err.startswith("whisperlens: error:") and message in err
    assert not out.exists()


def _no_model(*args, **kwargs):
    raise AssertionError("the model must not be loaded for a bad span")


# ---------------------------------------------------------------- transcribe keeps going


def test_transcribe_reports_each_bad_file_and_continues(tmp_path, capsys):
    a, b = _tone(tmp_path / "a.wav"), _tone(tmp_path / "b.wav")
    missing = tmp_path / "missing.wav"
    (tmp_path / "bad.wav").write_bytes(b"RIFF not really")
    files = [str(a), str(missing), str(tmp_path / "bad.wav"), str(b)]
    assert main(["transcribe", *files]) == 1
    captured = capsys.readouterr()
    assert [line.split(" [")[0] for line in captured.out.splitlines()] == [str(a), str(b)]
    errors = [line for line in captured.err.splitlines() if line.startswith("whisperlens:")]
    assert len(errors) == 2 and "missing.wav" in errors[0] and "bad.wav" in errors[1]
    assert "Traceback" not in captured.err
    assert main(["transcribe", *files, "--json"]) == 1
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == files
    assert ["error" in r for r in records] == [False, True, True, False]
    assert "text" in records[0] and "missing.wav" in records[1]["error"]


# ---------------------------------------------------------------- interrupts, sites, synth


def test_keyboard_interrupt_message(monkeypatch, capsys):
    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("whisperlens.commands.sites.run", interrupted)
    assert main(["sites"]) == 130
    assert capsys.readouterr().err == (
        "whisperlens: interrupted; re-run the same command to resume\n"
    )


@pytest.mark.parametrize(
    ("model", "n_enc", "n_dec"),
    [("tiny.en", 4, 4), ("base", 6, 6), ("openai/whisper-small", 12, 12)],
)
def test_sites_reads_depths_without_loading_weights(model, n_enc, n_dec, monkeypatch, capsys):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("whisperlens.models.whisper.load_whisper", _no_model)
    assert main(["sites", "--model", model]) == 0
    names = capsys.readouterr().out.split()
    assert f"encoder.blocks.{n_enc - 1}.hook_resid_post" in names
    assert f"encoder.blocks.{n_enc}.hook_resid_post" not in names
    assert f"decoder.blocks.{n_dec - 1}.hook_resid_post" in names
    assert f"decoder.blocks.{n_dec}.hook_resid_post" not in names


def test_sites_reads_a_transformers_directory_config(tmp_path, capsys, monkeypatch):
    config = {"model_type": "whisper", "encoder_layers": 3, "decoder_layers": 2}
    (tmp_path / "config.json").write_text(json.dumps(config))
    monkeypatch.setattr("whisperlens.models.whisper.load_whisper", _no_model)
    assert main(["sites", "--model", str(tmp_path)]) == 0
    names = capsys.readouterr().out.split()
    assert "encoder.blocks.2.hook_resid_post" in names and "decoder.blocks.1.hook_mlp_out" in names
    assert "encoder.blocks.3.hook_resid_post" not in names
    assert "decoder.blocks.2.hook_resid_post" not in names


def test_synth_mp3_and_unsupported_extension(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("WHISPERLENS_CACHE", str(tmp_path / "cache"))
    argv = ["stimuli", "synth", "--text", "cat", "--engine", "espeak"]
    assert main([*argv, "--out", str(tmp_path / "cat.mp3")]) == 0
    info = sf.info(tmp_path / "cat.mp3")
    assert info.format == "MP3" and info.samplerate == SR and info.duration > 0.1
    capsys.readouterr()
    assert main([*argv, "--out", str(tmp_path / "cat.xyz")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("whisperlens: error:") and ".xyz" in err and ".mp3" in err
    assert ".wav" in err and not (tmp_path / "cat.xyz").exists()


def test_verbose_flag_is_global():
    from whisperlens.cli import build_parser

    args = build_parser().parse_args(["--verbose", "sites"])
    assert args.verbose is True
    assert build_parser().parse_args(["sites"]).verbose is False


def test_quiet_by_default_and_verbose_on_request(tmp_path: Path):
    clip = _tone(tmp_path / "clip.wav")
    env = {**os.environ, "WHISPERLENS_CACHE": str(tmp_path / "cache")}
    for var in ("TRANSFORMERS_VERBOSITY", "HF_HUB_DISABLE_PROGRESS_BARS"):
        env.pop(var, None)
    argv = ["cache", str(clip), "--sites", "encoder.hook_ln_post", "--out"]
    quiet = _cli(*argv, str(tmp_path / "a.safetensors"), env=env)
    assert quiet.returncode == 0 and quiet.stderr == ""
    assert json.loads(quiet.stdout)["shape"] == [1, 50, 384]
    loud = _cli("--verbose", *argv, str(tmp_path / "b.safetensors"), env=env)
    assert loud.returncode == 0 and "Loading weights" in loud.stderr


def test_warnings_and_notes_are_one_line(capsys):
    import logging
    import warnings

    from whisperlens.cli import configure_output

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        configure_output(verbose=False)
        warnings.warn("converted model cache /x is corrupt\nor stale; rebuilding", stacklevel=1)
    logging.getLogger("whisperlens.stimuli.tts").warning("entry %s damaged; re-synthesizing", "a")
    assert capsys.readouterr().err == (
        "whisperlens: warning: converted model cache /x is corrupt or stale; rebuilding\n"
        "whisperlens: entry a damaged; re-synthesizing\n"
    )
