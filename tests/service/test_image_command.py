"""The gateway image's command, run natively (no Docker daemon on this machine): deploy/Dockerfile's build step that
bakes the index and its CMD, with its ENV, from this checkout (WORKDIR /app is the repository root, `reasonrec` the
command line of this checkout). It must serve the trained system, as `make serve` does: the SASRec+ ranker, the
`direct` ranker over the shipped item table, /rate from the shipped rating model, and the same items as `make serve`
for the same history, ranker by ranker (slow: the real SmolLM2).

Both run against the artifacts root of the test environment (`REASONREC_ARTIFACTS`, else ./artifacts), where the
build step writes what the image build writes into /app/artifacts: the converted model and the ML-100k index over
the shipped table (about 10 minutes on 2 idle cores the first time, then a no-op), as `make serve` does at its
first start.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from processes import GatewayProcess

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

REPO = Path(__file__).parents[2]
DOCKERFILE = REPO / "deploy" / "Dockerfile"
HISTORY = [{"item_id": "50", "rating": 5}, {"item_id": "172", "rating": 5}, {"item_id": "174", "rating": 4},
           {"item_id": "181", "rating": 5}]
RANKERS = ("sasrec", "direct", "popular", "content", "reasoning")
TAGS = re.compile(r"<analyze user>.+</analyze user>\s*<analyze item>.+</analyze item>\s*<match>.+</match>\s*"
                  r"<rate>[1-5]</rate>", re.DOTALL)
CLI = [sys.executable, "-m", "trainer.cli"]  # `reasonrec` of this checkout


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(instruction, arguments) of deploy/Dockerfile, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    return [(line.split()[0], line.split(maxsplit=1)[1]) for line in text.splitlines()
            if line.strip() and not line.startswith("#")]


def image_env() -> dict[str, str]:
    return {k: v for kind, args in dockerfile_instructions() if kind == "ENV"
            for k, _, v in (pair.partition("=") for pair in shlex.split(args))}


def native(command: list[str]) -> list[str]:
    assert command[0] == "reasonrec", command
    return [*CLI, *command[1:]]


def bake_step() -> list[str]:
    """The build step that converts the model and builds the index (`RUN reasonrec index ... && ...`)."""
    [run] = [args for kind, args in dockerfile_instructions() if kind == "RUN" and args.startswith("reasonrec index")]
    return native(shlex.split(run.split("&&")[0]))


def serving_env(artifacts: Path, image: bool) -> dict[str, str]:
    """The image's ENV (for `make serve`: none), natively: this machine's artifacts root and loopback instead of
    /app/artifacts and 0.0.0.0 (the port is a free one, given at start)."""
    env = {k: v for k, v in image_env().items() if k != "HOME"} if image else {}
    return {**env, "REASONREC_ARTIFACTS": str(artifacts), "REASONREC_HOST": "127.0.0.1", "PYTHONPATH": str(REPO)}


@pytest.fixture(scope="module")
def gateways(tmp_path_factory) -> Iterator[dict[str, GatewayProcess]]:
    artifacts = Path(os.environ.get("REASONREC_ARTIFACTS", REPO / "artifacts")).resolve()
    logs = tmp_path_factory.mktemp("image-command")
    baked = subprocess.run(bake_step(), cwd=REPO, env={**os.environ, **serving_env(artifacts, True)},
                           capture_output=True, text=True, timeout=3600)
    assert baked.returncode == 0, baked.stderr[-3000:]
    cmd = json.loads(next(args for kind, args in dockerfile_instructions() if kind == "CMD"))
    serve_recipe = re.search(r"^serve:.*\n\t\$\(BIN\)/(.+)$", (REPO / "Makefile").read_text(), re.M).group(1)
    make_serve = shlex.split(serve_recipe.replace("$(DATASET)", "ml-100k").replace("$(ADAPTER_FLAG)", ""))
    started = {name: GatewayProcess(serving_env(artifacts, name == "image"), logs / f"{name}.log",
                                    tuple(native(command)[1:]), tiny=False).start()
               for name, command in (("image", cmd), ("make serve", make_serve))}
    try:
        for gateway in started.values():
            gateway.wait_ready(timeout_s=900)
        yield started
    finally:
        for gateway in started.values():
            gateway.stop()


def post(gateway: GatewayProcess, path: str, body: dict) -> dict:
    response = httpx.post(gateway.url + path, json=body, timeout=600)
    assert response.status_code == 200, response.text
    return response.json()


def test_the_image_serves_the_index_over_the_shipped_table(gateways):
    ready = httpx.get(gateways["image"].url + "/readyz", timeout=30).json()
    assert ready["model"].startswith("ready: SmolLM2-135M-Instruct") and "-table-" in ready["index"], ready
    assert ready["engine"].endswith("(in process)")  # the image's default engine, as make serve's


@pytest.mark.parametrize("ranker", RANKERS)
def test_every_ranker_answers_with_the_trained_artifacts_as_make_serve_does(gateways, ranker):
    body = {"history": HISTORY, "k": 10, "ranker": ranker}
    image, make_serve = (post(gateways[name], "/recommend", body) for name in ("image", "make serve"))
    assert image["ranker"] == ranker and image["fallback"] is None, image
    assert len(image["items"]) == 10 and not {"50", "172", "174", "181"} & {i["item_id"] for i in image["items"]}
    assert [i["item_id"] for i in image["items"]] == [i["item_id"] for i in make_serve["items"]]


def test_rate_answers_from_the_rating_model_with_its_four_tags(gateways):
    body = {"history": HISTORY, "item_id": "1"}
    image, make_serve = (post(gateways[name], "/rate", body) for name in ("image", "make serve"))
    assert image["parsed"] is True and image["fallback"] is None and TAGS.fullmatch(image["reasoning"])
    assert image["timings_ms"]["total"] < 1000  # the model answers in microseconds; the LLM rating takes seconds
    assert (image["rating"], image["reasoning"]) == (make_serve["rating"], make_serve["reasoning"])
