"""Is the Hugging Face hub usable right now? Decided in about a second, never by retries.

Without a network, ``from_pretrained("openai/whisper-tiny")`` spends tens of seconds in
retries before it fails. :func:`hub_offline_reason` answers first: ``HF_HUB_OFFLINE`` /
``TRANSFORMERS_OFFLINE`` set, or one HEAD request to the hub (``HF_ENDPOINT``, default
huggingface.co) that gets no HTTP answer within :data:`PROBE_TIMEOUT_S`. Loaders then use the
local cache only (``local_files_only=True``) or fail at once naming the offline models.
"""

from __future__ import annotations

import os
import threading
import urllib.error
import urllib.request

PROBE_TIMEOUT_S = 1.0  # DNS + TCP connect, together
DEFAULT_ENDPOINT = "https://huggingface.co"
_TRUE = ("1", "true", "yes", "on")
_probed: dict[str, str | None] = {}  # endpoint -> reason; one probe per process


def offline_by_env() -> bool:
    """True when ``HF_HUB_OFFLINE`` or ``TRANSFORMERS_OFFLINE`` asks for no network."""
    flags = (os.environ.get("HF_HUB_OFFLINE"), os.environ.get("TRANSFORMERS_OFFLINE"))
    return any((flag or "").strip().lower() in _TRUE for flag in flags)


def hub_endpoint() -> str:
    """The hub's base URL (``HF_ENDPOINT`` or huggingface.co), without a trailing slash."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_offline_reason(timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Why the hub cannot be used now (a short phrase), or None when it answers."""
    if offline_by_env():
        return "HF_HUB_OFFLINE is set"
    endpoint = hub_endpoint()
    if endpoint not in _probed:
        _probed[endpoint] = _probe(endpoint, timeout_s)
    return _probed[endpoint]


def _probe(endpoint: str, timeout_s: float) -> str | None:
    """One HEAD request in a daemon thread, so a hanging DNS lookup is bounded too.

    An HTTP answer below 500 means the hub is there; a refused or timed-out connection, a
    failed TLS handshake (an intercepting proxy) or a gateway error means it is not.
    """
    result: list[str | None] = []

    def request() -> None:
        try:
            head = urllib.request.Request(endpoint + "/", method="HEAD")
            with urllib.request.urlopen(head, timeout=timeout_s):  # noqa: S310 (http/https only)
                result.append(None)
        except urllib.error.HTTPError as exc:
            result.append(None if exc.code < 500 else f"HTTP {exc.code}")
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            result.append(str(getattr(reason, "strerror", None) or reason))

    worker = threading.Thread(target=request, daemon=True)
    worker.start()
    worker.join(timeout_s)
    if not result:
        return f"{endpoint} did not answer within {timeout_s:g} s"
    return None if result[0] is None else f"{endpoint} is unreachable: {result[0]}"


def cached_in_hub(repo_id: str, filename: str = "config.json") -> bool:
    """True when ``filename`` of ``repo_id`` is in the local Hugging Face cache."""
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(repo_id, filename), str)
    except ValueError:  # not a valid repo id
        return False


def clear_probe_cache() -> None:
    """Forget earlier probe results (tests; a network that came back)."""
    _probed.clear()
