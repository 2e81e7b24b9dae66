#!/usr/bin/env bash
# `make test-debian13`: the project's own `make test` on Debian 13 "trixie" (Orthanc 1.12, Python plugin 5.0,
# Python 3.13), in a chroot of a root made from Debian's packages with debootstrap. Called by .ci/run after the
# host's (Debian 12) `make test`.
#
# - The root is made once (`debootstrap --variant=minbase trixie`, plus make) and cached in DEBIAN13_ROOT; it keeps
#   the Debian packages, the venv and pip's cache, so only the first run downloads Orthanc and torch. Remove the
#   directory to start from scratch; a half-made root is never taken for a made one.
# - Each run copies in the host's CA bundle, /etc/pip.conf, /opt/wheels, resolv.conf and hosts, sets PIP_* and
#   SSL_CERT_FILE like the host, copies the working tree (git's tracked and untracked, non-ignored files) into the
#   root, mounts /proc, /dev and /sys, runs `make test` there and removes the copy and the mounts on exit.
# - The chroot shares the host's network, so the suite's free ports work as on the host.
# - torch: on Python 3.13 no CPU wheel is reachable here (the local wheel is cp311, download.pytorch.org is not
#   reachable), so `torch==2.13.0` is PyPI's default Linux build, the CUDA one, with its nvidia-* / cuda-* wheels.
#   It is downloaded once into the cached root; see the README for what that costs.
#
#   DEBIAN13_ROOT=/path    the cached root (default /var/tmp/ai-orchestrator-trixie)
#   DEBIAN_MIRROR=URL      debootstrap's and apt's mirror (default http://deb.debian.org/debian)
#   TORCH_SPEC=...         passed on to scripts/install.sh inside the root
#   DEBIAN13_TARGET=...    the make target to run inside (default test)
# Needs root (debootstrap, mount, chroot): re-runs itself with sudo otherwise.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then exec sudo --preserve-env "$0" "$@"; fi

repo_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
suite=trixie
root=${DEBIAN13_ROOT:-/var/tmp/ai-orchestrator-$suite}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
target=${DEBIAN13_TARGET:-test}
inside_src=/opt/ai-orchestrator/src      # the copy of the working tree, inside the root
inside_venv=/opt/ai-orchestrator/venv    # kept between runs, with pip's cache in /root/.cache/pip
host_ca=/etc/ssl/certs/ca-certificates.crt
inside_ca=/opt/host-ca/ca-certificates.crt  # beside, not over, the bundle that Debian's ca-certificates rewrites

log() { printf '[debian13] %s\n' "$*" >&2; }

mounts_under() { awk -v prefix="$1/" 'index($2, prefix) == 1 { print $2 }' /proc/self/mounts | sort -r; }

unmount_all() {
  local mount
  for mount in $(mounts_under "$root"); do umount "$mount" 2>/dev/null || umount -l "$mount" 2>/dev/null || true; done
}

# One run at a time per root: a second waits for the first.
mkdir -p "$(dirname "$root")"
exec 9>"$root.lock"
flock 9

started=$SECONDS
unmount_all  # a run killed with SIGKILL leaves its mounts

if [ ! -f "$root/.ai-orchestrator-root" ]; then
  command -v debootstrap >/dev/null || {
    log "installing debootstrap"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
  }
  partial="$root.partial"
  [ -z "$(mounts_under "$partial")" ] || { log "something is mounted under $partial: not removing it"; exit 1; }
  [ -z "$(mounts_under "$root")" ] || { log "something is mounted under $root: not removing it"; exit 1; }
  rm -rf "$partial" "$root"
  log "making the Debian 13 root $root with debootstrap (once; a few minutes)"
  debootstrap --variant=minbase --include=make "$suite" "$partial" "$mirror" > "$root.debootstrap.log" 2>&1 ||
    { tail -20 "$root.debootstrap.log"; log "debootstrap failed (log: $root.debootstrap.log)"; exit 1; }
  date -u +%FT%TZ > "$partial/.ai-orchestrator-root"
  mv "$partial" "$root"
  log "root made in $((SECONDS - started)) s"
fi

cleanup() {
  local status=$?
  unmount_all
  rm -rf "${root:?}$inside_src"
  exit $status
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# Debian 13 with its updates and security updates, like a fresh install; the host's trust and pip settings.
printf 'deb %s %s main\ndeb %s %s-updates main\ndeb %s-security %s-security main\n' \
  "$mirror" "$suite" "$mirror" "$suite" "$mirror" "$suite" > "$root/etc/apt/sources.list"
install -D -m 644 "$host_ca" "$root$inside_ca"
[ -f /etc/pip.conf ] && install -m 644 /etc/pip.conf "$root/etc/pip.conf"
if [ -d /opt/wheels ]; then mkdir -p "$root/opt/wheels" && cp -a --update /opt/wheels/. "$root/opt/wheels/"; fi
for file in /etc/resolv.conf /etc/hosts; do [ -f "$file" ] && cat "$file" > "$root$file"; done

# The working tree as git sees it (tracked and untracked files, not the ignored ones: no .venv, data, caches);
# outside a git checkout, everything but those.
rm -rf "${root:?}$inside_src"
mkdir -p "$root$inside_src"
if git -C "$repo_dir" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  (cd "$repo_dir" && git ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' path; do [ -e "$path" ] && printf '%s\0' "$path"; done |
    tar --null -T - -cf -) | tar -xf - -C "$root$inside_src"
else
  tar -C "$repo_dir" --exclude=./.venv --exclude=./data --exclude=./.git --exclude='*/__pycache__' \
    --exclude='*_cache' -cf - . |
    tar -xf - -C "$root$inside_src"
fi

mount -t proc proc "$root/proc"
for dir in dev sys; do
  mount --rbind "/$dir" "$root/$dir"
  mount --make-rslave "$root/$dir"  # so that unmounting them here never unmounts the host's
done

environment=(PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8
             TERM="${TERM:-dumb}" VENV="$inside_venv")
while IFS='=' read -r name _; do
  [[ $name == PIP_* ]] && environment+=("$name=${!name}")
done < <(env)
environment+=(PIP_CERT="$inside_ca" SSL_CERT_FILE="$inside_ca" REQUESTS_CA_BUNDLE="$inside_ca")
[ -n "${TORCH_SPEC:-}" ] && environment+=(TORCH_SPEC="$TORCH_SPEC")

log "running \`make $target\` in the Debian 13 root ($(cat "$root/etc/debian_version"))"
run_started=$SECONDS
status=0
chroot "$root" /usr/bin/env -i "${environment[@]}" /bin/bash -c "cd $inside_src && make $target" || status=$?
log "make $target: exit $status after $((SECONDS - run_started)) s (whole target $((SECONDS - started)) s);" \
    "root $(du -sh --one-file-system "$root" 2>/dev/null | cut -f1)," \
    "venv $(du -sh "$root$inside_venv" 2>/dev/null | cut -f1), pip cache $(du -sh "$root/root/.cache/pip" 2>/dev/null | cut -f1)"
exit $status
