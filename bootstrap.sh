#!/usr/bin/env bash
# Installs what Railyard needs on Debian 12 (run as root): system packages and a virtualenv in .venv.
# Idempotent and quick when everything is already there.
set -euo pipefail
cd "$(dirname "$0")"

packages=(
  qemu-system-x86 qemu-utils ovmf              # machines
  mmdebstrap dosfstools mtools fdisk e2fsprogs zstd xz-utils  # the default image builder (xz: tests)
  ignition                                     # ignition-validate
  libvirt-daemon-system libvirt-clients libvirt-dev pkg-config  # --platform=libvirt (libvirt-python builds here)
  python3-venv python3-dev gcc                 # the virtualenv
  openssh-server iproute2                      # the cloud contract tests' guest: sshd in a network namespace
  chromium                                     # the HTML report's test renders it headless
  gnupg gpgv                                   # railyard image fetch checks signatures; its tests make keys
)
missing=()
for pkg in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${missing[*]}"
  apt-get update -qq
  # No daemon starts as a package is installed (libvirtd, sshd): the tests start what they need, by PID.
  policy=/usr/sbin/policy-rc.d
  if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy" && chmod 755 "$policy"
    trap 'rm -f "$policy"' EXIT
  fi
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
stamp=.venv/.railyard-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e '.[dev,libvirt,aws,azure]'
  touch "$stamp"
fi
echo "bootstrap: ready ($(.venv/bin/python --version), $(qemu-system-x86_64 --version | head -n1))"
