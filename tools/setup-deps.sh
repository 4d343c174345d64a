#!/usr/bin/env bash
# setup-deps.sh: install the Debian packages listed in tools/debian-packages.txt.
# Idempotent and never interactive: when everything is present it changes nothing.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# Azurite for tests/azure (npm, pinned by tests/azure/package-lock.json; no-op when present)
azurite() { "$here/../tests/azure/setup-azurite.sh" || echo "setup-deps: Azurite not installed (tests/azure installs it when it runs)" >&2; }
mapfile -t pkgs < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$here/debian-packages.txt" | grep -v '^$')

missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
	echo "setup-deps: all ${#pkgs[@]} packages present"
	azurite
	exit 0
fi

SUDO=
[ "$(id -u)" -eq 0 ] || SUDO=sudo
echo "setup-deps: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
azurite
