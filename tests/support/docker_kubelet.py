"""The fake API server's kubelet (``tests/support/fake_kube.py``): runs a Pod as a Docker container.

What a kubelet would do with the parts of a pod spec the Kubernetes backend writes, so the test proves the
spec really makes a working desktop: the image with ``command``/``args``; ``env``; the security context
(``runAsUser``/``runAsGroup``, ``fsGroup`` as a supplementary group, ``readOnlyRootFilesystem``, dropped and
added capabilities, ``allowPrivilegeEscalation: false`` as no-new-privileges; Docker's default seccomp
profile is ``RuntimeDefault``); ``emptyDir`` volumes as tmpfs (``/dev/shm``'s as the shm size); ``secret``
volumes as read-only files with the volume's mode and ``fsGroup``; CPU and memory limits. Containers join
the network the test created; the pod's IP is the container's address there. ``runtimeClassName`` is not
honoured (there is one runtime here).
"""

from __future__ import annotations

import base64
import contextlib
import re
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any

import docker.errors

LABEL = "deskpilot.test"
_UNITS = {"Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "k": 1000, "M": 1000**2, "G": 1000**3}


def quantity(value: str) -> int:
    match = re.fullmatch(r"(\d+)([A-Za-z]*)", value)
    assert match, value
    return int(match[1]) * _UNITS.get(match[2], 1)


def cpus(value: str) -> float:
    return int(value[:-1]) / 1000 if value.endswith("m") else float(value)


class DockerKubelet:
    def __init__(self, engine: Any, network: str, secrets_of: Any) -> None:
        """``secrets_of(namespace, name)`` returns a Secret object from the API server's store."""
        self.engine, self.network, self.secrets_of = engine, network, secrets_of
        self._dirs: dict[str, Path] = {}
        self._errors: dict[str, str] = {}
        self._stopped: set[str] = set()
        self._lock = threading.Lock()

    def _key(self, pod: dict[str, Any]) -> str:
        return pod["metadata"]["uid"]

    def run(self, pod: dict[str, Any]) -> None:
        threading.Thread(target=self._run, args=(pod,), daemon=True).start()

    def _run(self, pod: dict[str, Any]) -> None:
        key, spec = self._key(pod), pod["spec"]
        (container,) = spec["containers"]
        pod_ctx, ctx = spec.get("securityContext", {}), container.get("securityContext", {})
        uid = ctx.get("runAsUser", pod_ctx.get("runAsUser", 0))
        gid = ctx.get("runAsGroup", pod_ctx.get("runAsGroup", 0))
        fs_group = pod_ctx.get("fsGroup")
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        tmpfs: dict[str, str] = {}
        binds: dict[str, dict[str, str]] = {}
        shm = None
        root = Path(tempfile.mkdtemp(prefix="dpk-"))
        with self._lock:
            self._dirs[key] = root
        for mount in container.get("volumeMounts", []):
            volume, path = volumes[mount["name"]], mount["mountPath"]
            if "emptyDir" in volume:
                size = volume["emptyDir"].get("sizeLimit")
                if path == "/dev/shm":
                    shm = quantity(size) if size else None
                else:
                    tmpfs[path] = "rw,nosuid,nodev,mode=1777" + (f",size={quantity(size)}" if size else "")
            elif "secret" in volume:
                secret = self.secrets_of(pod["metadata"]["namespace"], volume["secret"]["secretName"])
                target = root / mount["name"]
                target.mkdir()
                for item in volume["secret"].get("items") or [{"key": k, "path": k} for k in secret["data"]]:
                    file = target / item["path"]
                    file.write_bytes(base64.b64decode(secret["data"][item["key"]]))
                    if fs_group is not None:
                        shutil.chown(file, group=fs_group)
                    file.chmod(volume["secret"].get("defaultMode", 0o644))
                target.chmod(0o755)
                binds[str(target)] = {"bind": path, "mode": "ro"}
        limits = container.get("resources", {}).get("limits", {})
        try:
            self.engine.containers.run(
                container["image"], entrypoint=container.get("command"), command=container.get("args"),
                environment={e["name"]: e["value"] for e in container.get("env", [])},
                user=f"{uid}:{gid}", group_add=[str(fs_group)] if fs_group is not None else None,
                read_only=ctx.get("readOnlyRootFilesystem", False),
                cap_drop=ctx.get("capabilities", {}).get("drop"), cap_add=ctx.get("capabilities", {}).get("add"),
                security_opt=["no-new-privileges:true"] if ctx.get("allowPrivilegeEscalation") is False else None,
                tmpfs=tmpfs, volumes=binds, shm_size=shm, network=self.network, detach=True,
                name=f"fake-kube-{pod['metadata']['name']}", labels={LABEL: "fake-kube", "pod-uid": key},
                mem_limit=quantity(limits["memory"]) if "memory" in limits else None,
                nano_cpus=int(cpus(limits["cpu"]) * 1e9) if "cpu" in limits else None)
        except docker.errors.DockerException as exc:
            with self._lock:
                self._errors[key] = str(exc)
            return
        with self._lock:
            stopped = key in self._stopped
        if stopped:  # deleted while it was being started
            self.stop(pod)

    def _container(self, pod: dict[str, Any]) -> Any:
        found = self.engine.containers.list(all=True, filters={"label": f"pod-uid={self._key(pod)}"})
        return found[0] if found else None

    def status(self, pod: dict[str, Any]) -> dict[str, Any]:
        name = pod["spec"]["containers"][0]["name"]
        with self._lock:
            error = self._errors.get(self._key(pod))
        if error:
            return {"phase": "Pending", "containerStatuses": [
                {"name": name, "state": {"waiting": {"reason": "CreateContainerError", "message": error}}}]}
        container = self._container(pod)
        if container is None:
            return {"phase": "Pending"}
        state = container.attrs["State"]
        if state["Status"] in ("exited", "dead"):
            return {"phase": "Failed", "containerStatuses": [{"name": name, "state": {"terminated": {
                "exitCode": state["ExitCode"], "reason": "OOMKilled" if state.get("OOMKilled") else "Error"}}}]}
        ip = container.attrs["NetworkSettings"]["Networks"].get(self.network, {}).get("IPAddress")
        return {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "containerStatuses": [{"name": name, "state": {"running": {}}, "ready": True}]}

    def stop(self, pod: dict[str, Any]) -> None:
        with self._lock:
            self._stopped.add(self._key(pod))
        container = self._container(pod)
        if container is not None:
            with contextlib.suppress(docker.errors.NotFound):
                container.remove(force=True)
        with self._lock:
            root = self._dirs.pop(self._key(pod), None)
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
