"""deploy/: every YAML and JSON file parses, and what the files point at exists: probe and health-check paths
are routes the gateway app really has, environment variables are settings fields, vLLM arguments are those of
model/engines/vllm_launch.py, and dashboard and autoscaler metrics are metrics the gateway exports. (Docker is not run
here: these checks are static.)"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from indexer.core.paths import SHIPPED
from model.engines.replicas import HEALTH_PATH
from model.engines.vllm_launch import server_args
from service.main import create_app
from service.metrics import Metrics
from service.settings import Settings

DEPLOY = Path(__file__).parents[2] / "deploy"
COMPOSE_SERVICES = {"gateway", "model-init", "vllm-generate", "vllm-pool", "redis-cache", "redis-catalog", "prometheus",
                    "grafana"}
ONE_SHOT = {"model-init"}  # fills the vLLM servers' model volume from the gateway image, then exits
VLLM_ROLES = {"vllm-generate": "generate", "vllm-pool": "pool"}
URL_PATH = re.compile(r"https?://[^/'\"\s]+(/[^'\"\s)]*)")


def load_yaml(path: Path) -> list[Any]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc is not None]


def k8s_objects() -> list[dict[str, Any]]:
    return [doc for path in sorted((DEPLOY / "k8s").glob("*.yaml")) for doc in load_yaml(path) if "kind" in doc]


def k8s_object(kind: str, name: str) -> dict[str, Any]:
    return next(o for o in k8s_objects() if o["kind"] == kind and o["metadata"]["name"] == name)


@pytest.fixture(scope="module")
def routes() -> set[str]:
    """The app's paths: every route in its OpenAPI schema, plus the top-level ones (docs) that are not in it."""
    app = create_app(Settings(model="tiny"))
    return set(app.openapi()["paths"]) | {route.path for route in app.routes if hasattr(route, "path")}


@pytest.fixture(scope="module")
def metric_samples() -> set[str]:
    """Every sample name the gateway's metrics can produce (counter `_total`, histogram `_bucket`, ...)."""
    suffixes = {"counter": ("_total", "_created"), "gauge": ("",),
                "histogram": ("_bucket", "_sum", "_count", "_created")}
    return {f"{m.name}{s}" for m in Metrics().registry.collect() for s in suffixes[m.type]}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return load_yaml(DEPLOY / "compose.yaml")[0]


def test_every_yaml_and_json_file_parses():
    files = sorted(p for p in DEPLOY.rglob("*") if p.suffix in {".yaml", ".yml", ".json"})
    assert len(files) >= 12
    for path in files:
        assert (json.loads(path.read_text()) if path.suffix == ".json" else load_yaml(path)), path


def test_compose_has_the_stack_with_health_checks_on_real_routes(compose, routes):
    services = compose["services"]
    assert set(services) == COMPOSE_SERVICES
    for name, service in services.items():
        assert "healthcheck" in service or name in ONE_SHOT, f"{name} has no health check"
    gateway_check = " ".join(services["gateway"]["healthcheck"]["test"])
    assert URL_PATH.search(gateway_check).group(1) in routes
    for name in VLLM_ROLES:
        assert URL_PATH.search(" ".join(services[name]["healthcheck"]["test"])).group(1) == HEALTH_PATH
    assert set(services["gateway"]["depends_on"]) == {"redis-cache", "redis-catalog", "vllm-generate", "vllm-pool"}
    for name in VLLM_ROLES:
        assert services[name]["depends_on"]["model-init"]["condition"] == "service_completed_successfully"


def served_args(role: str) -> list[str]:
    """The launch arguments of `role` in the deployments: the model folder and, on the generation server, the
    shipped reasoning adapter the gateway image serves by default (copied beside the model by the init step)."""
    return server_args(role, "/models/SmolLM2-135M-Instruct", "0.0.0.0", 8000,
                       adapter=SHIPPED / "ml-100k" / "reasoning", adapter_on_server="/models/reasoning")


def test_the_init_steps_copy_the_adapter_the_generation_server_loads(compose):
    [vllm_init] = k8s_object("Deployment", "vllm-generate")["spec"]["template"]["spec"]["initContainers"]
    for command in (compose["services"]["model-init"]["command"], vllm_init["command"]):
        assert "cp -a /app/deploy/artifacts/ml-100k/reasoning /models/reasoning" in command[-1]


def test_compose_gateway_settings_and_vllm_arguments(compose):
    services = compose["services"]
    env = services["gateway"]["environment"]
    assert all(key.removeprefix("REASONREC_").lower() in Settings.model_fields for key in env)
    for name, role in VLLM_ROLES.items():
        assert services[name]["command"] == served_args(role)
        assert f"http://{name}:8000" in env[f"REASONREC_VLLM_{role.upper()}_URLS"]


def test_kubernetes_probes_point_at_real_routes(routes):
    for deployment in (o for o in k8s_objects() if o["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            probes = [container[p] for p in ("startupProbe", "readinessProbe", "livenessProbe") if p in container]
            assert {"readinessProbe", "livenessProbe"} <= set(container), deployment["metadata"]["name"]
            assert container["resources"]["requests"] and container["resources"]["limits"]
            for probe in (p for p in probes if "httpGet" in p):
                path = probe["httpGet"]["path"]
                assert path in routes if deployment["metadata"]["name"] == "gateway" else path == HEALTH_PATH


def test_kubernetes_vllm_roles_have_gpus_and_the_launch_arguments():
    for name, role in VLLM_ROLES.items():
        [container] = k8s_object("Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["args"] == served_args(role)
        assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = k8s_object("ConfigMap", "gateway-env")["data"]
    assert all(key.removeprefix("REASONREC_").lower() in Settings.model_fields for key in env)
    assert env["REASONREC_ENGINE"] == "vllm" and env["REASONREC_CATALOG_SYNC"] == "true"


def test_autoscaler_scales_the_gateway_on_an_exported_metric(metric_samples):
    hpa = k8s_object("HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"]["name"] == "gateway"
    [metric] = hpa["spec"]["metrics"]
    assert metric["pods"]["metric"]["name"] in metric_samples
    kustomization = load_yaml(DEPLOY / "k8s" / "kustomization.yaml")[0]
    assert {r["name"] for r in kustomization["replicas"]} == {"gateway", "vllm-generate", "vllm-pool"}
    listed = set(kustomization["resources"])
    not_listed = {"kustomization.yaml", "prometheus-adapter-values.yaml"}
    assert listed == {p.name for p in (DEPLOY / "k8s").glob("*.yaml")} - not_listed


def test_dashboard_uses_exported_metrics_and_the_provisioned_datasource(metric_samples, routes):
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "reasonrec.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    used = {name for expr in exprs for name in re.findall(r"\breasonrec_[a-z_]+", expr)}
    assert used and used <= metric_samples, used - metric_samples
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("ranker", "stage", "cache hit", "fallback", "tokens per second"):
        assert topic in titles
    [source] = load_yaml(DEPLOY / "grafana" / "provisioning" / "datasources" / "prometheus.yaml")[0]["datasources"]
    assert {panel["datasource"]["uid"] for panel in dashboard["panels"]} == {source["uid"]}
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]
    assert all(job["metrics_path"] in routes for job in prometheus["scrape_configs"] if "gateway" in job["job_name"])


def test_alerts_use_exported_metrics_and_the_status_label(metric_samples):
    """A 5xx rate can be alerted on: the request histogram has a status label and the rules use exported names."""
    prometheus = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")[0]
    assert prometheus["rule_files"] == ["/etc/prometheus/alerts.yml"]
    rules = [rule for group in load_yaml(DEPLOY / "prometheus" / "alerts.yml")[0]["groups"] for rule in group["rules"]]
    used = {name for rule in rules for name in re.findall(r"\breasonrec_[a-z_]+", rule["expr"])}
    assert used and used <= metric_samples, used - metric_samples
    Metrics().request_duration.labels(endpoint="/recommend", ranker="sasrec", status="503")  # these labels, or raises
    assert any('status=~"5.."' in rule["expr"] for rule in rules), "no alert on the 5xx rate"
