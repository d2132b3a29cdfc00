"""Engine selection and catalog sync in the settings: REASONREC_ENGINE=vllm with comma-separated replica URLs,
and the combinations that are refused with a message naming the variable to fix."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings

URLS = {"REASONREC_VLLM_GENERATE_URLS": "http://g1:8000, http://g2:8000", "REASONREC_VLLM_POOL_URLS": "http://p1:8000"}


def test_vllm_engine_reads_comma_separated_urls(monkeypatch):
    monkeypatch.setenv("REASONREC_ENGINE", "vllm")
    for key, value in URLS.items():
        monkeypatch.setenv(key, value)
    settings = Settings()
    assert settings.engine == "vllm"
    assert settings.vllm_generate_urls == ["http://g1:8000", "http://g2:8000"]
    assert settings.vllm_pool_urls == ["http://p1:8000"]


def test_transformers_is_the_default_and_needs_no_urls():
    assert Settings().engine == "fast"


@pytest.mark.parametrize(("values", "message"), [
    ({"engine": "vllm", "vllm_pool_urls": ["http://p:8000"]}, "REASONREC_VLLM_GENERATE_URLS"),
    ({"catalog_sync": True}, "REASONREC_REDIS_URL"),
    ({"engine": "tgi"}, "engine"),
])
def test_incomplete_combinations_are_refused(values, message):
    with pytest.raises(ValidationError, match=message):
        Settings(**values)


def test_a_vllm_gateway_takes_the_reasoning_adapter_its_generation_servers_serve():
    settings = Settings(engine="vllm", vllm_generate_urls=["http://g"], vllm_pool_urls=["http://p"], adapter="lora")
    assert str(settings.reasoning_adapter()) == "lora"
