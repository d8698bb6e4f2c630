"""The objects the Kubernetes backend creates (desktop/backends/kube_spec.py), validated offline: the core kinds
strictly against the Kubernetes 1.32 schemas (kubernetes-validate), the agent-sandbox kinds against the v1beta1
CRD schemas of kubernetes-sigs/agent-sandbox (tests/deploy/agent_sandbox/crd_schemas.yaml), with unknown fields
refused as the API server's pruning would drop them. The fake API server accepts whatever it is sent; these
schemas are what a real one checks.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from deskpilot.settings import Settings
from desktop.backends.cluster import DesktopSpec, base_labels
from desktop.backends.kube_spec import (
    desktop_pod,
    network_policy_spec,
    sandbox_claim,
    sandbox_template,
    sandbox_warm_pool,
    token_secret,
)

KUBERNETES_VERSION = "1.32.0"
CRDS = yaml.safe_load((Path(__file__).parent / "agent_sandbox" / "crd_schemas.yaml").read_text())
LABELS = base_labels("0123456789ab", "kubernetes")
SPEC = DesktopSpec(key="a1b2c3d4e5f6", name="deskpilot-012345-a1b2c3d4e5f6", labels={**LABELS, "deskpilot.desktop":
                   "a1b2c3d4e5f6"}, token="t" * 43, width=1280, height=800, session_id="sess/any chars",
                   proxy="10.1.2.3:20000")
SETTINGS = Settings(kubernetes_runtime_class="gvisor", kubernetes_node_selector={"deskpilot.dev/desktops": "true"})
OWNER = [{"apiVersion": "v1", "kind": "Pod", "name": "deskpilot-abc", "uid": "5f0c3b9e-0000-4000-8000-000000000000"}]


def closed(schema: Any) -> Any:
    """Refuse unknown fields where the CRD lists its fields (the API server prunes them silently)."""
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema and "additionalProperties" not in schema \
                and not schema.get("x-kubernetes-preserve-unknown-fields"):
            schema = {**schema, "additionalProperties": False}
        return {k: closed(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [closed(v) for v in schema]
    return schema


def crd_validate(plural: str, obj: dict[str, Any]) -> None:
    schema = closed(CRDS[plural])
    schema["properties"]["metadata"] = {"type": "object"}  # metadata is the API server's, checked by it
    jsonschema.validate(obj, schema)


def test_a_desktop_pod_its_secret_and_its_policy_are_valid_kubernetes_objects() -> None:
    pod = desktop_pod(SETTINGS, SPEC, namespace="deskpilot", start_url="https://example.com/", kiosk=True,
                      owner=OWNER)
    policy = {"apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
              "metadata": {"name": "deskpilot-012345", "namespace": "deskpilot", "labels": LABELS},
              "spec": network_policy_spec(SETTINGS, LABELS, proxied=True)}
    direct = {**policy, "spec": network_policy_spec(SETTINGS, LABELS, proxied=False)}
    for obj in (pod, token_secret(f"{SPEC.name}-token", SPEC.token, SPEC.labels, "deskpilot"), policy, direct):
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_the_agent_sandbox_objects_match_the_v1beta1_crds() -> None:
    template = sandbox_template(SETTINGS, name="deskpilot-012345", namespace="deskpilot", labels=LABELS,
                                secret_name="deskpilot-012345-pool-token", start_url="about:blank", kiosk=False,
                                owner=OWNER)
    crd_validate("sandboxtemplates", template)
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x", **template["spec"]["podTemplate"]["metadata"]},
           "spec": template["spec"]["podTemplate"]["spec"]}
    kubernetes_validate.validate(pod, KUBERNETES_VERSION, strict=True)
    crd_validate("sandboxwarmpools", sandbox_warm_pool(name="deskpilot-012345", namespace="deskpilot", labels=LABELS,
                                                       replicas=2, owner=OWNER))
    crd_validate("sandboxclaims", sandbox_claim(SPEC, pool="deskpilot-012345", namespace="deskpilot", owner=OWNER))


def test_the_crd_check_refuses_what_the_api_server_would_drop() -> None:
    claim = sandbox_claim(SPEC, pool="p", namespace="deskpilot", owner=[])
    claim["spec"]["sandboxTemplateRef"] = {"name": "p"}  # v1alpha1's field, gone in v1beta1
    with pytest.raises(jsonschema.ValidationError, match="sandboxTemplateRef"):
        crd_validate("sandboxclaims", claim)
