#!/usr/bin/env bash
# Runs Orthanc in the foreground with DICOMweb and the AI orchestrator plugin.
# Environment (defaults): ORTHANC_HTTP_PORT (8042), ORTHANC_DICOM_PORT (4242), ORTHANC_DATA_DIR (<repo>/data),
# ORTHANC_STABLE_AGE (5), AI_ORCHESTRATOR_WS_PORT (8765), AI_ORCHESTRATOR_MODELS_DIR (<repo>/models),
# ORTHANC_USERNAME/ORTHANC_PASSWORD (authentication), ORTHANC_REMOTE_ACCESS (0), VENV (<repo>/.venv).
set -euo pipefail

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${VENV:-$repo_dir/.venv}
data_dir=${ORTHANC_DATA_DIR:-$repo_dir/data}
mkdir -p "$data_dir"
data_dir=$(cd "$data_dir" && pwd)
export ORTHANC_DATA_DIR=$data_dir

config="$data_dir/orthanc-runtime.json"
PYTHONPATH="$repo_dir/plugin" "$venv/bin/python" -m ai_orchestrator.launch_config \
  "$repo_dir/orthanc/orthanc.json" "$config"

# The embedded interpreter is the Python that Debian's plugin links (3.11 on Debian 12, 3.13 on Debian 13), the one
# install.sh made this venv with: the plugin's entry script adds the venv's site-packages.
export AI_ORCHESTRATOR_VENV=$venv
verbosity=()
[ "${ORTHANC_VERBOSE:-0}" = 1 ] && verbosity=(--verbose)
echo "[run] Orthanc on http://localhost:$(sed -n 's/.*"HttpPort": \([0-9]*\).*/\1/p' "$config"), data in $data_dir" >&2
exec /usr/sbin/Orthanc "${verbosity[@]}" "$config"
