#!/usr/bin/env bash
# setup-azurite.sh: install the pinned Azurite (tests/azure/package-lock.json) into
# tests/azure/node_modules. Does nothing when it is already there (offline-friendly).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
want=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["dependencies"]["azurite"])' "$here/package.json")
have=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["version"])' \
	"$here/node_modules/azurite/package.json" 2>/dev/null || true)
if [ "$have" = "$want" ] && [ -x "$here/node_modules/.bin/azurite-blob" ]; then
	exit 0
fi
command -v npm >/dev/null || { echo "setup-azurite: npm missing" >&2; exit 1; }
echo "setup-azurite: installing azurite $want from the lock file" >&2
cd "$here"
npm ci --no-audit --no-fund --prefer-offline
