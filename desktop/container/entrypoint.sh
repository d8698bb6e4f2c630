#!/bin/sh
# Desktop container entry point (runs under tini as the non-root desktop user).
# The backend mounts a private directory at $DESKPILOT_RUN_DIR holding the daemon's token file; the
# daemon serves on a unix socket next to it, so no port is ever published. Screen size, start URL and
# browser come from DESKPILOT_* variables, read by the daemon's Settings.
set -eu
run_dir="${DESKPILOT_RUN_DIR:-/run/deskpilot}"
token_file="$run_dir/token"
# Wait briefly for the token: a warm-pool container may start before the backend writes it.
i=0
while [ ! -s "$token_file" ]; do
  i=$((i + 1))
  if [ "$i" -gt 100 ]; then
    echo "entrypoint: no token at $token_file" >&2
    exit 64
  fi
  sleep 0.1
done
mkdir -p "$HOME" "${DESKPILOT_DATA_DIR:-/tmp/deskpilot}"
rm -f "$run_dir/daemon.sock"
exec deskpilot desktopd --uds "$run_dir/daemon.sock" --token-file "$token_file" "$@"
