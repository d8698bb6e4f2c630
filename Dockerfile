# deskpilot images. Two targets share one Python venv:
#   desktop  one disposable desktop (Xvfb, openbox, x11vnc, Chromium) driven by `deskpilot desktopd`,
#            which starts and supervises those components; reached only over a unix socket in the volume
#            mounted at /run/deskpilot (the token is read from a file there, never from env). The backend
#            starts it as root with only SETUID/SETGID/KILL; the daemon becomes that volume's owner and runs
#            the model's programs as a separate sandbox uid (docs/security.md).
#   service  the web service (`deskpilot serve`): REST, live viewer, approvals; starts desktop containers.
# Build:  docker build --target desktop -t deskpilot-desktop .   and   docker build --target service -t deskpilot .
# Layers are ordered slowest-changing first, so editing the source rebuilds only the last few seconds.

FROM debian:bookworm-slim AS base
LABEL org.opencontainers.image.title="deskpilot"
ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python3 python3-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --user-group --shell /bin/bash deskpilot

# The desktop's operating system: the slowest layer (Chromium, fonts), cached until provision.sh changes.
FROM base AS desktop-os
# The same provisioning script CI runs on the host, so the image's packages are exercised by the host tests.
COPY desktop/provision.sh /tmp/provision.sh
RUN bash /tmp/provision.sh \
 && rm -rf /var/lib/apt/lists/* /tmp/provision.sh \
 && find / -xdev -perm -4000 -type f -exec chmod u-s {} + \
 && ! command -v sudo
# (above: no setuid programs and no sudo, so nobody becomes root inside even without no-new-privileges)

# The venv's dependencies, exactly requirements.lock (pinned, hashed, never resolved: --no-deps):
# cached until the lock changes. The tests ran on the same versions (requirements-dev.lock agrees with it).
FROM base AS deps
# Behind a TLS-intercepting proxy, pass its CA (PEM text) for pip only; this stage is not shipped,
# so the final images do not carry it:  --build-arg PIP_EXTRA_CA="$(cat /path/to/ca.crt)"
ARG PIP_EXTRA_CA=""
WORKDIR /src
COPY requirements.lock ./
RUN python3 -m venv /opt/deskpilot \
 && if [ -n "$PIP_EXTRA_CA" ]; then \
      { cat /etc/ssl/certs/ca-certificates.crt; printf '%s\n' "$PIP_EXTRA_CA"; } > /tmp/pip-ca.pem \
      && export PIP_CERT=/tmp/pip-ca.pem; fi \
 && /opt/deskpilot/bin/pip install -q --require-hashes --no-deps -r requirements.lock \
 && /opt/deskpilot/bin/pip check \
 && rm -f /tmp/pip-ca.pem

# The project as a wheel (no network: the build backend is already in the venv). The final stages copy
# the large dependency venv (cached) and install this small wheel, so a source change rebuilds seconds.
FROM deps AS wheel
COPY pyproject.toml README.md ./
COPY deskpilot ./deskpilot
COPY desktop ./desktop
COPY agent ./agent
COPY web ./web
RUN /opt/deskpilot/bin/pip wheel -q --no-deps --no-build-isolation -w /wheels .

FROM desktop-os AS desktop
COPY --from=deps /opt/deskpilot /opt/deskpilot
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/deskpilot/bin/pip install -q --no-deps --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels
COPY desktop/container/entrypoint.sh desktop/container/healthcheck.py /usr/local/lib/deskpilot/
RUN install -d -o deskpilot -g deskpilot -m 0700 /run/deskpilot
ENV PATH=/opt/deskpilot/bin:$PATH \
    HOME=/home/deskpilot \
    DESKPILOT_DATA_DIR=/tmp/deskpilot \
    DESKPILOT_RUN_DIR=/run/deskpilot
USER deskpilot
WORKDIR /home/deskpilot
# /run/deskpilot is bind-mounted by the backend (no VOLUME here: it would leave anonymous volumes behind).
# tini reaps the browser's zombies and forwards SIGTERM; the daemon itself restarts the browser,
# window manager and VNC server when they die. Xvfb dying loses the desktop: the daemon answers 503
# and the healthcheck fails, and the backend reports the lost desktop to the session.
ENTRYPOINT ["/usr/bin/tini", "--", "/bin/sh", "/usr/local/lib/deskpilot/entrypoint.sh"]
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/deskpilot/bin/python", "/usr/local/lib/deskpilot/healthcheck.py"]

FROM base AS service
COPY --from=deps /opt/deskpilot /opt/deskpilot
COPY --from=wheel /wheels /tmp/wheels
RUN /opt/deskpilot/bin/pip install -q --no-deps --no-index /tmp/wheels/*.whl && rm -rf /tmp/wheels
RUN install -d -o deskpilot -g deskpilot -m 0700 /data
ENV PATH=/opt/deskpilot/bin:$PATH \
    DESKPILOT_DATA_DIR=/data \
    DESKPILOT_HOST=0.0.0.0 \
    DESKPILOT_PORT=8000
USER deskpilot
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8000
ENTRYPOINT ["/usr/bin/tini", "--", "deskpilot"]
CMD ["serve"]
HEALTHCHECK --interval=15s --timeout=3s --start-period=20s --retries=3 \
  CMD ["/opt/deskpilot/bin/python", "-c", "import httpx,os,sys; r=httpx.get(f\"http://127.0.0.1:{os.environ.get('DESKPILOT_PORT','8000')}/healthz\", timeout=2); sys.exit(r.status_code != 200)"]
