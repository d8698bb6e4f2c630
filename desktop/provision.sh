#!/usr/bin/env bash
# Installs the Debian packages a deskpilot desktop needs. The Dockerfile runs this same script,
# and CI runs it on the host, so the image's contents are exercised even without building it.
#   DESKPILOT_PROVISION_EXTRAS=1  also installs the reference tools the benchmarks compare against.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

packages=(
  xvfb            # the X server, with MIT-SHM and XTEST
  openbox         # a light window manager that maximises the browser
  x11vnc          # VNC server, bound to a unix socket only
  chromium        # the browser the model drives
  fonts-dejavu-core fonts-noto-cjk fonts-noto-color-emoji
  x11-utils       # xdpyinfo, used by humans to debug a display
  ca-certificates procps
)
if [ "${DESKPILOT_PROVISION_EXTRAS:-0}" = 1 ]; then
  packages+=(xdotool scrot imagemagick)
fi

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
