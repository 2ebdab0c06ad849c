#!/usr/bin/env bash
# Sets up everything avcurate needs on a fresh Debian machine: system ffmpeg (and espeak-ng for the
# speech samples) and a Python 3.11 virtualenv with `pip install -e .[dev]`; with --prism, also Beam's Prism
# runner and headless Chromium for the tests. Safe to run again: it reinstalls only when pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}

missing=()
for tool in ffmpeg ffprobe espeak-ng; do command -v "$tool" >/dev/null 2>&1 || missing+=("$tool"); done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing ffmpeg and espeak-ng with apt-get (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ffmpeg espeak-ng >/dev/null
  else
    echo "setup: missing ${missing[*]}. Install them first, e.g. 'sudo apt-get install ffmpeg espeak-ng'," >&2
    echo "       or 'brew install ffmpeg espeak-ng' on macOS, then run this command again." >&2
    exit 1
  fi
fi

PY=${PYTHON:-}
if [ -z "$PY" ]; then
  for candidate in python3.11 python3; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
      PY=$candidate; break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "setup: avcurate needs Python 3.11 (set PYTHON=/path/to/python3.11)" >&2
  exit 1
fi

stamp="$VENV/.avcurate-setup"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  # uv (from PyPI) installs the same wheels as pip, several times faster, and caches them.
  if ! "$PY" -m uv --version >/dev/null 2>&1; then
    "$PY" -m pip install -q --disable-pip-version-check uv
  fi
  "$PY" -m uv venv -q --allow-existing -p "$PY" "$VENV"
  "$PY" -m uv pip install -q --python "$VENV/bin/python" -e ".[dev]"
  echo "$want" > "$stamp"
  echo "setup: ready ($VENV)"
fi

# --prism (the tests' setup): also Debian's headless Chromium and its driver, which open the run report in a real
# browser (tests/test_report.py, scripts/screenshot_report.py).
# The paths are avcurate/report/browser.py's. A failed install only warns: it costs that one test, not the rest.
if [ "${1:-}" = "--prism" ] && ! { [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing chromium and chromium-driver with apt-get (the report's browser test)"
    apt-get update -qq
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null; then
      echo "setup: could not install chromium and chromium-driver (Debian's names; on Ubuntu install Chromium and" >&2
      echo "       its chromedriver so that /usr/bin/chromium and /usr/bin/chromedriver exist); the report's browser" >&2
      echo "       test will fail until then." >&2
    fi
  else
    echo "setup: chromium and chromedriver are missing, so the report's browser test will fail. Install them first," >&2
    echo "       e.g. 'sudo apt-get install chromium chromium-driver', then run this command again." >&2
  fi
fi

# --prism: Beam's portable Prism runner, built from source with Go at the installed Beam's version (Beam would
# otherwise download a release binary from GitHub at run time). The tests run the pipeline on it.
if [ "${1:-}" = "--prism" ] && ! [ -x "$VENV/bin/prism" ]; then
  beam_version=$("$VENV/bin/python" -c 'from importlib.metadata import version; print(version("apache-beam"))')
  if ! command -v go >/dev/null 2>&1; then
    echo "setup: Go is not installed, so Beam's Prism runner cannot be built and the test that runs the" >&2
    echo "       pipeline on it will fail. Install Go >= 1.24 (https://go.dev/dl/) and run this command again." >&2
  else
    echo "setup: building Beam's Prism runner $beam_version with Go (once; about 2 minutes)"
    GOBIN="$(pwd)/$VENV/bin" GOTOOLCHAIN=auto go install "github.com/apache/beam/sdks/v2/go/cmd/prism@v$beam_version"
  fi
fi
