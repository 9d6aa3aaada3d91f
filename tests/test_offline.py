"""Without a network, hub ids fail in under 2 s and name the offline alternatives."""

from __future__ import annotations

import http.server
import socket
import threading
import time
from collections.abc import Iterator

import pytest

from whisperlens.errors import ModelNotAvailableError
from whisperlens.models import hub
from whisperlens.models.text import load_text_model
from whisperlens.models.whisper import load_whisper


@pytest.fixture(autouse=True)
def _fresh_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_ENDPOINT"):
        monkeypatch.delenv(var, raising=False)
    # a developer's hub cache may hold these ids; the point here is the not-cached path
    monkeypatch.setattr(hub, "cached_in_hub", lambda repo_id, filename="config.json": False)
    hub.clear_probe_cache()
    yield
    hub.clear_probe_cache()


@pytest.fixture()
def silent_port() -> Iterator[int]:
    """A port that accepts connections but never answers."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        yield server.getsockname()[1]


def _no_network(monkeypatch: pytest.MonkeyPatch, how: str, silent_port: int) -> None:
    if how == "env":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    elif how == "refused":  # a port nothing listens on
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    else:  # a host that accepts the connection but never answers
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{silent_port}")


@pytest.mark.parametrize("how", ["env", "refused", "blackhole"])
def test_whisper_hub_id_offline_fails_fast(
    how: str, monkeypatch: pytest.MonkeyPatch, silent_port: int
):
    _no_network(monkeypatch, how, silent_port)
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        load_whisper("openai/whisper-tiny")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "'openai/whisper-tiny' needs the Hugging Face hub, which is offline" in message
    assert "tiny.en, base" in message and "local path" in message


@pytest.mark.parametrize("how", ["env", "refused", "blackhole"])
def test_text_hub_id_offline_fails_fast(
    how: str, monkeypatch: pytest.MonkeyPatch, silent_port: int
):
    _no_network(monkeypatch, how, silent_port)
    start = time.perf_counter()
    with pytest.raises(ModelNotAvailableError) as info:
        load_text_model("gpt2-xl")
    assert time.perf_counter() - start < 2.0
    message = str(info.value)
    assert "'gpt2-xl' is not available (offline: it needs the Hugging Face hub" in message
    assert "did you mean" not in message and "smollm2-135m" in message


def test_probe_sees_an_http_server(monkeypatch: pytest.MonkeyPatch):
    class Ok(http.server.BaseHTTPRequestHandler):
        def do_HEAD(self) -> None:  # noqa: N802 (http.server's naming)
            self.send_response(200)
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Ok) as server:
        threading.Thread(target=server.handle_request, daemon=True).start()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        assert hub.hub_offline_reason() is None
    hub.clear_probe_cache()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert hub.hub_offline_reason() == "HF_HUB_OFFLINE is set"


def test_text_model_case_hint_still_works():
    from whisperlens.models.text import _not_available

    message = str(_not_available("GPT2-XL", False, OSError("not found")))
    assert "did you mean 'gpt2-xl'" in message
    assert "'gpt2-xl'?" not in str(_not_available("gpt2-xl", False, OSError("x")))
