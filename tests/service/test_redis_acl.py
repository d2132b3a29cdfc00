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


REDIS = ("redis-cache", "redis-catalog")


def compose() -> dict:
    return load_yaml(DEPLOY / "compose.yaml")[0]


def compose_acl_args(service: str) -> list[str]:
    """The redis-server arguments of one Redis of deploy/compose.yaml after the binary, with the password filled
    in (AOF off: the private test server keeps nothing on disk)."""
    command = compose()["services"][service]["command"]
    assert command[0] == "redis-server"
    args = [PASSWORD_VAR.sub(PASSWORD, arg) for arg in command[1:]]
    at = args.index("--appendonly")
    return args[:at] + args[at + 2:]


def test_compose_redis_has_no_open_user_and_only_the_gateway_reaches_it():
    services = compose()["services"]
    for name in REDIS:
        args = " ".join(services[name]["command"])
        assert "--user default off" in args and "--user reasonrec on >${REASONREC_REDIS_PASSWORD" in args
        assert "--user reasonrec" in " ".join(services[name]["healthcheck"]["test"])  # an open PING would fail
        assert services[name]["environment"]["REDISCLI_AUTH"].startswith("${REASONREC_REDIS_PASSWORD")
        assert services[name]["networks"] == ["cache"] and "ports" not in services[name]
    gateway = services["gateway"]["environment"]
    assert gateway["REASONREC_REDIS_PASSWORD"].startswith("${REASONREC_REDIS_PASSWORD")
    assert gateway["REASONREC_REDIS_URL"].startswith("redis://reasonrec@redis-cache:")
    assert gateway["REASONREC_CATALOG_REDIS_URL"].startswith("redis://reasonrec@redis-catalog:")
    on_cache_network = {name for name, service in services.items() if "cache" in service.get("networks", [])}
    assert on_cache_network == {*REDIS, "gateway"} and compose()["networks"]["cache"]["internal"] is True


def test_kubernetes_redis_needs_the_secret_and_admits_only_gateway_pods():
    for kind, name in (("Deployment", "redis-cache"), ("StatefulSet", "redis-catalog")):
        [redis_container] = k8s_object(kind, name)["spec"]["template"]["spec"]["containers"]
        args = " ".join(redis_container["args"])
        assert "--user default off" in args and "--user reasonrec on >$(REDIS_PASSWORD)" in args
        [secret_env] = [e for e in redis_container["env"] if e["name"] == "REDIS_PASSWORD"]
        assert secret_env["valueFrom"]["secretKeyRef"] == {"name": "reasonrec-redis", "key": "password"}
    [gateway] = k8s_object("Deployment", "gateway")["spec"]["template"]["spec"]["containers"]
    [password] = [e for e in gateway["env"] if e["name"] == "REASONREC_REDIS_PASSWORD"]
    assert password["valueFrom"]["secretKeyRef"] == {"name": "reasonrec-redis", "key": "password"}
    assert k8s_object("ConfigMap", "gateway-env")["data"]["REASONREC_REDIS_URL"].startswith("redis://reasonrec@")

    policy = k8s_object("NetworkPolicy", "redis")["spec"]
    assert policy["podSelector"] == {"matchExpressions": [{"key": "app", "operator": "In", "values": list(REDIS)}]}
    assert policy["policyTypes"] == ["Ingress", "Egress"] and policy["egress"] == []
    [rule] = policy["ingress"]
    assert rule["from"] == [{"podSelector": {"matchLabels": {"app": "gateway"}}}]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6379}]


def port_of(proc) -> int:
    return int(proc.args[proc.args.index("--port") + 1])


@pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs the redis-server binary")
def test_the_compose_acls_shut_out_strangers_and_serve_the_gateway(serve, index_dir, tiny_engine):
    with private_redis(extra_args=compose_acl_args("redis-cache"), password=PASSWORD) as cache, \
            private_redis(extra_args=compose_acl_args("redis-catalog"), password=PASSWORD) as catalog:
        stranger = redis.Redis(port=port_of(catalog))
        with pytest.raises(redis.AuthenticationError):
            stranger.xadd("reasonrec:catalog:any", {"op": "remove", "item_id": "1"})
        wrong = redis.Redis(port=port_of(cache), username="reasonrec", password="guess")
        with pytest.raises(redis.AuthenticationError):
            wrong.ping()
        gateway_user = redis.Redis(port=port_of(catalog), username="reasonrec", password=PASSWORD)
        cache_user = redis.Redis(port=port_of(cache), username="reasonrec", password=PASSWORD)
        for forbidden in (lambda: gateway_user.set("elsewhere", 1), gateway_user.flushall,
                          lambda: gateway_user.config_get("*"), lambda: gateway_user.keys("*"),
                          gateway_user.client_list, lambda: cache_user.xadd("reasonrec:catalog:x", {"op": "x"})):
            with pytest.raises(redis.exceptions.NoPermissionError):
                forbidden()

        # every snapshot write and trim runs under the catalog's ACL too (one snapshot per change)
        settings = tiny_settings(index_dir, redis_url=f"redis://reasonrec@127.0.0.1:{port_of(cache)}/0",
                                 catalog_redis_url=f"redis://reasonrec@127.0.0.1:{port_of(catalog)}/0",
                                 redis_password=PASSWORD, catalog_sync=True, catalog_snapshot_every=1)
        server = serve(settings, tiny_engine)
        ready = server.client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["cache"] == "redis: redis reachable", ready.text
        body = {"history": history("1", "2"), "k": 3}
        assert server.client.post("/recommend", json=body).json()["cached"] is False
        assert server.client.post("/recommend", json=body).json()["cached"] is True
        for n in range(2):
            added = server.client.post("/admin/items", json={"items": [{"item_id": f"acl-{n}", "title": "ACL"}]},
                                       headers=admin_headers())
            assert added.status_code == 200, added.text
        stream = f"reasonrec:catalog:{(index_dir / CURRENT_FILE).read_text().strip()}"
        assert gateway_user.xrange(stream) == [] and gateway_user.hget(stream + ":snapshot", "version") == b"3"
        assert serve(settings, tiny_engine).client.get("/items/acl-1").status_code == 200  # from the snapshot
        for client in (stranger, wrong, gateway_user, cache_user):
            client.close()
