"""Redis is closed: compose and Kubernetes start it with an ACL (no unauthenticated user; the gateway's user
reaches only its own keys and the commands it uses), only the gateway can reach it over the network, and the
gateway logs in with REASONREC_REDIS_PASSWORD. The ACL in deploy/compose.yaml runs here on a real redis-server."""

from __future__ import annotations

import re
import shutil

import pytest
import redis
from private_redis import private_redis
from service_helpers import admin_headers, history, tiny_settings
from test_deploy_files import DEPLOY, k8s_object, load_yaml

from indexer.store import CURRENT_FILE

PASSWORD = "test-redis-password"
PASSWORD_VAR = re.compile(r"\$\{REASONREC_REDIS_PASSWORD[^}]*\}")


def compose() -> dict:
    return load_yaml(DEPLOY / "compose.yaml")[0]


def compose_acl_args() -> list[str]:
    """The redis-server arguments of deploy/compose.yaml after the binary, with the password filled in."""
    command = compose()["services"]["redis"]["command"]
    assert command[0] == "redis-server"
    return [PASSWORD_VAR.sub(PASSWORD, arg) for arg in command[1:] if arg not in ("--appendonly", "yes")]


def test_compose_redis_has_no_open_user_and_only_the_gateway_reaches_it():
    services = compose()["services"]
    args = " ".join(services["redis"]["command"])
    assert "--user default off" in args and "--user reasonrec on >${REASONREC_REDIS_PASSWORD" in args
    assert "--user reasonrec" in " ".join(services["redis"]["healthcheck"]["test"])  # an open PING would fail
    assert services["redis"]["environment"]["REDISCLI_AUTH"].startswith("${REASONREC_REDIS_PASSWORD")
    assert services["gateway"]["environment"]["REASONREC_REDIS_PASSWORD"].startswith("${REASONREC_REDIS_PASSWORD")
    assert services["gateway"]["environment"]["REASONREC_REDIS_URL"].startswith("redis://reasonrec@redis:")
    on_cache_network = {name for name, service in services.items() if "cache" in service.get("networks", [])}
    assert on_cache_network == {"redis", "gateway"} and services["redis"]["networks"] == ["cache"]
    assert compose()["networks"]["cache"]["internal"] is True and "ports" not in services["redis"]


def test_kubernetes_redis_needs_the_secret_and_admits_only_gateway_pods():
    [redis_container] = k8s_object("StatefulSet", "redis")["spec"]["template"]["spec"]["containers"]
    args = " ".join(redis_container["args"])
    assert "--user default off" in args and "--user reasonrec on >$(REDIS_PASSWORD)" in args
    [secret_env] = [e for e in redis_container["env"] if e["name"] == "REDIS_PASSWORD"]
    assert secret_env["valueFrom"]["secretKeyRef"] == {"name": "reasonrec-redis", "key": "password"}
    [gateway] = k8s_object("Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    [password] = [e for e in gateway["env"] if e["name"] == "REASONREC_REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "reasonrec-redis", "key": "password"}
    assert k8s_object("ConfigMap", "gateway-env")["data"]["REASONREC_REDIS_URL"].startswith("redis://reasonrec@")

    policy = k8s_object("NetworkPolicy", "redis")["spec"]
    assert policy["podSelector"] == {"matchLabels": {"app": "redis"}} and policy["policyTypes"] == ["Ingress"]
    [rule] = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "gateway"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_the_compose_acl_shuts_out_strangers_and_serves_the_gateway(serve, index_dir, tiny_engine):
    with private_redis(extra_args=compose_acl_args(), password=PASSWORD) as proc:
        port = int(proc.args[proc.args.index("--port") + 1])
        stranger = redis.Redis(port=port)
        with pytest.raises(redis.AuthenticationError):
            stranger.xadd("reasonrec:catalog:any", {"op": "remove", "item_id": "1"})
        wrong = redis.Redis(port=port, username="reasonrec", password="guess")
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        gateway_user = redis.Redis(port=port, username="reasonrec", password=PASSWORD)
        for forbidden in (lambda: gateway_user.set("elsewhere", 1), gateway_user.flushall,
                          lambda: gateway_user.config_get("*"), lambda: gateway_user.keys("*"),
                          gateway_user.client_list):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()

        settings = tiny_settings(index_dir, redis_url=f"redis://reasonrec@127.0.0.1:{port}/0",
                                 redis_password=PASSWORD, catalog_sync=True)
        server = serve(settings, tiny_engine)
        ready = server.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["cache"] == "redis: redis reachable", ready.text
        body = {"history": history("1", "2"), "k": 3}
        assert server.client.post("/recommend", json=body).json()["cached"] is False
        assert server.client.post("/recommend", json=body).json()["cached"] is True
        added = server.client.post("/admin/items", json={"items": [{"item_id": "acl-1", "title": "Behind The ACL"}]},
                                   headers=admin_headers())
        assert added.status_code == 200, added.text
        stream = f"reasonrec:catalog:{(index_dir / CURRENT_FILE).read_text().strip()}"
        assert len(gateway_user.xrange(stream)) == 1
        for client in (stranger, wrong, gateway_user):
            client.close()
