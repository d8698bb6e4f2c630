#!/bin/sh
# Desktop container entry point, under tini. It starts as root with only CAP_SETUID, CAP_SETGID and CAP_KILL
# (the backend's cap_drop/cap_add, no-new-privileges): `--as-owner-of` makes the daemon the owner of the
# bind-mounted run directory at once (the service's uid, so the service reaches the socket), keeping just those
# capabilities to run the model's programs as a separate sandbox uid that cannot enter that directory.
# The daemon reads its token file from there and serves on a unix socket next to it: no port is published.
# Screen size, start URL and browser come from DESKPILOT_* variables, read by the daemon's Settings.
set -eu
run_dir="${DESKPILOT_RUN_DIR:-/run/deskpilot}"
exec deskpilot desktopd --as-owner-of "$run_dir" --uds "$run_dir/daemon.sock" --token-file "$run_dir/token" "$@"
