"""The one settings object. Every field can be set from the environment as ``DESKPILOT_<NAME>``.

Sections are grouped by floor; add a field to the section of the floor that reads it.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DESKPILOT_", env_file=".env", extra="ignore")

    # --- shared ---
    data_dir: Path = Field(default=Path.home() / ".local/share/deskpilot",
                           description="Database, screenshots and desktop sockets live here.")
    log_format: Literal["auto", "json", "console"] = "auto"

    # --- desktop ---
    desktop_backend: Literal["local", "docker", "swarm", "kubernetes"] = "local"
    screen_width: int = Field(default=1024, ge=320, le=8192)
    screen_height: int = Field(default=768, ge=240, le=8192)
    browser: str = "chromium"
    browser_start_url: str = "about:blank"
    settle_quiet_ms: int = Field(default=250, ge=0, description="Screen unchanged this long = settled "
                                 "(long enough for a page's images to follow its first paint).")
    settle_first_change_ms: int = Field(default=300, ge=0,
                                        description="How long to wait for an action's first visible change.")
    settle_cap_ms: int = Field(default=3000, ge=0, description="Upper bound on waiting for the screen to settle.")
    settle_poll_ms: int = Field(default=15, ge=1, le=1000, description="Interval between frames while settling.")
    settle_small_quiet_ms: int = Field(default=300, ge=0, le=480, description="Quiet needed while only small "
                                       "areas changed (button press, visited link): the real response may follow.")
    settle_browser_first_change_ms: int = Field(default=100, ge=0, description="With the browser's signal: no "
                                                "load, request or pixel change this long = no visible effect.")
    settle_browser_quiet_ms: int = Field(default=30, ge=0, description="With the browser's signal: browser idle "
                                         "and screen unchanged this long = settled.")
    settle_browser_load_quiet_ms: int = Field(default=15, ge=0, description="The same after a page load whose "
                                              "last paint came before the pages drew two frames for it.")
    settle_browser_stale_ms: int = Field(default=2000, ge=0, description="Loads/requests begun this long before "
                                         "an action are background (long polls): not waited for.")
    bash_timeout_s: float = Field(default=120.0, gt=0)
    bash_output_cap: int = Field(default=16_000, gt=0, description="Characters of bash output returned.")
    editor_view_cap: int = Field(default=16_000, gt=0,
                                 description="Characters of a file the editor's view returns (unless max_characters).")
    desktop_token: SecretStr | None = Field(default=None, description="Bearer secret of one desktop daemon "
                                           "(read by `deskpilot desktopd`; or --token-file).")
    desktop_start_timeout_s: float = Field(default=60.0, gt=0, description="Cap on each desktop component's start.")
    desktop_sandbox: Literal["uid", "off"] = Field(
        default="uid", description="uid: the model's shell, editor and browser run as a separate per-desktop uid "
        "(needs root or CAP_SETUID; the docker backend always has it). off: as the daemon's own user, which lets "
        "the model read everything that user can (docs/security.md).")
    # Egress (desktop/egress_*.py, docs/security.md): each desktop's traffic goes through its session's proxy.
    egress_allow: list[str] = Field(default_factory=lambda: ["*"], description="Default policy.network.allow: "
                                    "host names, *.suffix wildcards, CIDRs, or * for everything.")
    egress_deny: list[str] = Field(default_factory=lambda: ["169.254.0.0/16", "fe80::/10"],
                                   description="Default policy.network.deny (block wins over allow); the default "
                                   "keeps cloud metadata and link-local addresses out of reach.")
    egress_hosts: dict[str, str] = Field(default_factory=dict, description="Name -> address map the egress "
                                         "proxy uses instead of DNS when set (tests; pinned hosts). Empty: DNS.")
    egress_shell: Literal["proxy", "none"] = Field(
        default="proxy", description="Local backend: the model's shell goes through the egress proxy (proxy; a "
        "program ignoring proxy variables is not held) or has no network at all (none: its own empty network "
        "namespace, needs unprivileged user namespaces). The docker backend's desktops have no network anyway.")
    egress_report_interval_s: float = Field(default=10.0, ge=0, description="At most one egress_blocked event "
                                            "per host in this many seconds (every refusal is still refused).")
    # Docker backend (desktop/backends/docker.py): one hardened container per session.
    docker_image: str = "deskpilot-desktop:latest"
    docker_network: str = Field(default="none", description="Desktop containers' network: none (default: no "
                                "interface but loopback; the egress proxy's socket is the only way out), bridge "
                                "(the proxy is then bypassable), host (shares host loopback: tests only), or a name.")
    docker_warm_pool: int = Field(default=1, ge=0, description="Desktops kept started ahead of sessions.")
    docker_run_dir: Path | None = Field(default=None, description="Host dir of per-desktop socket dirs (same path "
                                        "inside the service container); default <data_dir>/desktops.")
    docker_memory: str = "2g"
    docker_cpus: float = Field(default=1.0, gt=0)
    docker_pids_limit: int = Field(default=512, ge=64)
    docker_shm_size: str = "256m"
    # Swarm backend (desktop/backends/swarm.py): one Swarm service per session; image and limits as above.
    swarm_network: str = Field(default="deskpilot-desktops", description="Encrypted, attachable overlay network "
                               "the desktops' daemons listen on (created when missing); this service must be on it.")
    swarm_attach_container: str = Field(default="", description="Container to connect to swarm_network at start: "
                                        "this service's own when it runs in a plain container, not on it already.")
    swarm_constraints: list[str] = Field(default_factory=list, description="Placement constraints of the desktops, "
                                         "e.g. [\"node.labels.deskpilot.desktops==true\"].")
    swarm_warm_pool: int = Field(default=0, ge=0, description="Swarm desktops kept started ahead of sessions.")
    swarm_cpu_reservation: float = Field(default=0.5, ge=0, description="CPUs reserved per desktop (scheduling).")
    swarm_memory_reservation: str = Field(default="512m", description="Memory reserved per desktop (scheduling).")
    # Kubernetes backend (desktop/backends/kubernetes.py, docs/kubernetes.md): a Pod per session (or an
    # agent-sandbox claim); image and limits as the Docker backend's (docker_image, docker_cpus, docker_memory).
    kubernetes_namespace: str = Field(default="", description="Namespace of the desktops; empty: the service "
                                      "account's (in a pod) or the kubeconfig context's.")
    kubernetes_kubeconfig: Path | None = Field(default=None, description="Kubeconfig file; unset: the pod's "
                                               "service account, else $KUBECONFIG or ~/.kube/config.")
    kubernetes_warm_pool: int = Field(default=1, ge=0, description="Desktops kept started ahead of sessions "
                                      "(with agent-sandbox: its SandboxWarmPool's replicas).")
    kubernetes_cpu_request: str = Field(default="500m", description="CPU requested per desktop (scheduling).")
    kubernetes_memory_request: str = Field(default="512Mi", description="Memory requested per desktop.")
    kubernetes_runtime_class: str = Field(default="", description="runtimeClassName of the desktops (gvisor, "
                                          "kata); empty: the cluster's default runtime.")
    kubernetes_node_selector: dict[str, str] = Field(default_factory=dict, description="nodeSelector of the "
                                                     "desktops, e.g. {\"deskpilot.dev/desktops\": \"true\"}.")
    kubernetes_service_labels: dict[str, str] = Field(
        default_factory=lambda: {"app.kubernetes.io/name": "deskpilot", "app.kubernetes.io/component": "service"},
        description="Labels of the service's pods: the only pods the desktops' NetworkPolicy lets in.")
    kubernetes_egress_allow: list[str] = Field(default_factory=lambda: ["0.0.0.0/0"], description="With "
                                               "kubernetes_egress=direct: the ranges desktops may reach (and DNS).")
    kubernetes_egress_except: list[str] = Field(
        default_factory=lambda: ["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10",
                                 "169.254.0.0/16"],
        description="Ranges cut out of those: the cluster's own networks and cloud metadata.")
    kubernetes_egress: Literal["proxy", "direct"] = Field(
        default="proxy", description="proxy: a desktop's only way out is its session's egress proxy in this "
        "service's pod (as the docker backend's); direct: the egress ranges below, no per-session policy.")
    kubernetes_proxy_host: str = Field(default="", description="This service pod's IP (downward API "
                                       "status.podIP): where the desktops reach their egress proxies.")
    kubernetes_proxy_port_min: int = Field(default=20000, ge=1024, le=65535,
                                           description="First port of the egress proxies' range.")
    kubernetes_proxy_port_max: int = Field(default=20999, ge=1024, le=65535,
                                           description="Last port of the egress proxies' range.")
    kubernetes_owner_pod: str = Field(default="", description="This service's own pod name (downward API): "
                                      "its desktops are owned by it, so Kubernetes removes them with it.")
    kubernetes_agent_sandbox: Literal["auto", "off"] = Field(
        default="auto", description="auto: claim desktops from an agent-sandbox SandboxWarmPool when its CRDs "
        "are served; off: always a Pod per desktop.")

    # --- agent ---
    # The SDK's own variable names, so an existing setup works unchanged.
    anthropic_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("anthropic_api_key", "ANTHROPIC_API_KEY")
    )
    anthropic_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("anthropic_base_url", "ANTHROPIC_BASE_URL")
    )
    model: str = Field(default="claude-sonnet-4-6", description="provider/model: anthropic/claude-…, openai/…, "
                       "gemini/…, openai-compatible/<family-model>; a bare Claude name means anthropic/.")
    # Other providers (agent/providers/): again the SDKs' own variable names where they have one.
    openai_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("openai_api_key", "OPENAI_API_KEY"))
    openai_base_url: str | None = Field(
        default=None, validation_alias=AliasChoices("openai_base_url", "OPENAI_BASE_URL"))
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("gemini_api_key", "GEMINI_API_KEY", "GOOGLE_API_KEY"))
    gemini_base_url: str | None = Field(default=None, description="Gemini API endpoint (a proxy or a test server).")
    openai_compat_base_url: str | None = Field(
        default=None, description="OpenAI-compatible chat endpoint for open GUI models (vLLM, SGLang, Ollama: "
        "e.g. http://127.0.0.1:8000/v1); a session's base_url overrides it.")
    openai_compat_api_key: SecretStr | None = Field(
        default=None, description="Key for that endpoint, if it wants one (local servers usually do not).")
    computer_tool_version: str | None = Field(
        default=None, description="Override the computer tool version chosen from the model (e.g. computer_20250124)."
    )
    computer_beta_flag: str | None = Field(default=None, description="Override the computer-use beta flag.")
    max_tokens: int = Field(default=8192, ge=256, description="max_tokens per model call (includes thinking).")
    thinking_budget_tokens: int = Field(default=2048, ge=0, description="Extended thinking budget; 0 turns it off.")
    keep_screenshots: int = Field(default=5, ge=1, description="At most this many screenshots in any request.")
    screenshot_removal_chunk: int = Field(
        default=3, ge=1, description="Old screenshots are dropped this many at a time, so the cached prefix holds."
    )
    max_steps: int = Field(default=100, ge=1, description="Model calls per run before it stops.")
    max_cost_usd: float = Field(default=5.0, ge=0, description="Spend per run before it stops; 0 = no limit.")
    # --- watchdog (agent/watchdog.py); 0 turns a detector off ---
    # Chosen from `python -m bench.watchdog_bench` (34 suite tasks, real desktops; docs/security.md has the
    # table): the longest innocent streaks are repeat 2, no change 5, looks 3, and agents that get nowhere run
    # to 40 of each. Each limit sits about twice above the innocent maximum, so a run wastes < 10 calls.
    # 8 px: models re-aiming at the same control jitter by a few pixels; distinct controls sit >= ~16 px apart.
    watchdog_repeat_limit: int = Field(default=4, ge=0, description="Same action, no screen change: pause after.")
    watchdog_radius_px: int = Field(default=8, ge=0, description="Clicks this close count as the same action.")
    watchdog_no_change_limit: int = Field(default=10, ge=0, description="Actions without any screen change.")
    watchdog_reread_limit: int = Field(default=6, ge=0, description="Screenshot/zoom-only calls in a row.")
    # Measured at a fast 1.5 s per model call: a long run sends at most ~190k tokens a minute whole (a provider
    # without prompt caching), ~40k with caching; x1.33 for the largest model screen (FWXGA), plus thinking.
    # 1M/min is ~4x the worst of that. $1/min: ~1.7x that uncached pace at $3/M input, ~3x a cached Opus run.
    watchdog_max_tokens_per_minute: int = Field(default=1_000_000, ge=0, description="Full-price tokens per minute.")
    watchdog_max_cost_per_minute: float = Field(default=1.0, ge=0, description="USD per minute.")
    model_prices: dict[str, list[float]] = Field(
        default_factory=dict,
        description="USD per million tokens [input, output, cache_write, cache_read] by model name prefix; "
        "overrides the built-in table.",
    )
    model_timeout_s: float = Field(default=120.0, gt=0, description="Timeout of one model request.")
    model_retries: int = Field(default=6, ge=0, description="Retries of one model call before the run pauses.")
    retry_after_cap_s: float = Field(default=120.0, ge=0, description="Longest retry-after we wait.")
    retry_backoff_s: float = Field(default=1.0, ge=0, description="First backoff (doubles, with jitter).")
    approval_policy: str = Field(default="cautious", description="autonomous | cautious | strict")
    step_classifier: str | None = Field(
        default=None, description="package.module:function asked about every step the policy allows; it can "
        "make one wait for approval (agent/classifier.py).",
    )

    # --- web ---
    host: str = "127.0.0.1"
    port: int = 8000
    database_url: str | None = Field(default=None, description="SQLAlchemy URL; SQLite in data_dir if unset.")
    max_sessions: int = Field(default=4, ge=1)
    max_queued: int = Field(default=100, ge=1, description="Sessions waiting for a desktop (across replicas) "
                            "before POST /api/sessions answers 429 with Retry-After.")
    queue_retry_after_s: int = Field(default=10, ge=1, description="Retry-After of that 429, in seconds.")
    cluster: bool = Field(default=False, description="One of several replicas on one PostgreSQL database_url: "
                          "sessions leased to one replica, events and commands shared (docs/scale-out.md).")
    replica_id: str = Field(default="", max_length=200, description="This replica's name in leases; "
                            "host-pid-random if unset.")
    lease_ttl_s: float = Field(default=6.0, gt=0, description="A session's lease lapses this long after its "
                               "replica's last renewal; another replica then takes the session over.")
    lease_renew_s: float = Field(default=2.0, gt=0, description="How often a replica renews its leases and "
                                 "looks for lapsed ones.")
    allowed_origins: list[str] = Field(
        default_factory=list,
        description="Extra browser origins allowed (WebSockets, cookie-authenticated REST) besides the service's own.",
    )
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="Largest accepted request body.")
    ws_max_message_bytes: int = Field(default=1_048_576, ge=1024, description="Largest accepted WebSocket message.")
    rate_limit_per_minute: int = Field(default=1200, ge=1, description="Requests per token per minute.")
    login_failures_per_minute: int = Field(
        default=10, ge=1, description="Wrong tokens accepted per client address per minute before 429s."
    )
    login_failures_burst: int = Field(default=20, ge=1, description="Wrong tokens per address allowed at once.")
    login_session_hours: float = Field(
        default=24.0, gt=0, le=24 * 90, description="How long a browser login lasts (logout ends it sooner)."
    )
    viewer_queue_size: int = Field(default=512, ge=8, description="Events buffered per viewer before it is dropped.")
    frame_fps: float = Field(default=15.0, gt=0, le=60, description="Live screen frames per second while watched.")


_T = TypeVar("_T")


def default_of(name: str, kind: type[_T]) -> _T:
    """A field's default, for dataclasses that mirror a setting: one source per default."""
    value = Settings.model_fields[name].default
    if not isinstance(value, kind):
        raise TypeError(f"setting {name} has no {kind.__name__} default")
    return value


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()
