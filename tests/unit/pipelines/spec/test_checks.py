"""The rules about a job's parameters, written once: what each refuses, the field it names and the
code a refused job fails with on a worker."""

from __future__ import annotations

import dataclasses

import pytest

from pipelines.spec.cache_policy import FirstBlockCache, MagCache, NoCache, TaylorSeer
from pipelines.spec.checks import Deployment, ParamRefused, check_cache, check_lora, check_params
from pipelines.spec.params import JobParams
from pipelines.spec.registry import get_model
from pipelines.spec.types import LoraWeight

BASE = {"prompt": "a fox", "width": 64, "height": 64, "seed": 1, "num_inference_steps": 4}
QWEN, FLUX, WAN = get_model("tiny-qwen-image"), get_model("tiny-flux"), get_model("tiny-wan")
OPEN = Deployment()


def refusal(spec, deployment=OPEN, **fields) -> ParamRefused:
    with pytest.raises(ParamRefused) as refused:
        check_params(spec, JobParams(**BASE | fields), deployment)
    return refused.value


def test_parameters_the_model_takes_pass():
    check_params(QWEN, JobParams(**BASE, true_cfg_scale=4.0, negative_prompt=" ", cache=TaylorSeer()), OPEN)
    check_params(FLUX, JobParams(**BASE, guidance_scale=3.5, cache=MagCache()), OPEN)
    check_params(WAN, JobParams(**BASE, lora=(LoraWeight("a"), LoraWeight("b", 0.5))), OPEN)


@pytest.mark.parametrize(
    "spec,fields,param,code",
    [
        (WAN, {"num_images": 2}, "n", "invalid_value"),
        (WAN, {"partial_images": 1}, "partial_images", "unsupported_parameter"),
        (QWEN, {"num_inference_steps": 201}, "num_inference_steps", "invalid_value"),
        (FLUX, {"negative_prompt": "x"}, "negative_prompt", "unsupported_parameter"),
        (QWEN, {"guidance_scale": 2.0}, "guidance_scale", "unsupported_parameter"),
        (FLUX, {"true_cfg_scale": 2.0}, "true_cfg_scale", "unsupported_parameter"),
        (QWEN, {"cache": MagCache()}, "cache", "unsupported_parameter"),
        (QWEN, {"strength": 0.5}, "strength", "unsupported_parameter"),
    ],
)
def test_what_a_model_cannot_run_is_refused_naming_the_field(spec, fields, param, code):
    refused = refusal(spec, **fields)
    assert (refused.param, refused.code) == (param, code)


def test_a_compiled_deployment_refuses_caches_and_adapters():
    compiled = Deployment(compiled=True)
    check_cache(QWEN, NoCache(), compiled)
    cache = refusal(QWEN, compiled, cache=TaylorSeer())
    assert (cache.param, cache.job_code) == ("cache", "cache_unsupported")
    assert "compiles" in cache.message and "cannot run on a compiled transformer" in cache.message
    lora = refusal(QWEN, compiled, lora=(LoraWeight("a"),))
    assert (lora.param, lora.job_code) == ("lora", "lora_unsupported")


def test_a_model_default_is_checked_by_the_same_rule():
    # FLUX.1-dev's registry default is MagCache: a compiling deployment cannot serve it as it is.
    dev = get_model("black-forest-labs/FLUX.1-dev")
    with pytest.raises(ParamRefused, match="black-forest-labs/FLUX.1-dev"):
        check_cache(dev, dev.cache, Deployment(compiled=True))


def test_a_sharded_deployment_refuses_only_the_first_block_cache():
    sharded = Deployment(sharded=True)
    refused = refusal(WAN, sharded, cache=FirstBlockCache())
    assert refused.job_code == "cache_unsupported_sharded" and "deadlock" in refused.message
    check_cache(WAN, TaylorSeer(), sharded)
    check_cache(FLUX, MagCache(), sharded)


def test_lora_rules():
    no_lora = dataclasses.replace(QWEN, pipeline_class="AnotherPipeline")
    with pytest.raises(ParamRefused, match="takes no LoRA"):
        check_lora(no_lora, (LoraWeight("a"),), OPEN)
    with pytest.raises(ParamRefused) as too_many:
        check_lora(QWEN, tuple(LoraWeight(name) for name in "abc"), Deployment(lora_max_per_request=2))
    assert too_many.value.param == "lora"
    with pytest.raises(ParamRefused) as twice:
        check_lora(QWEN, (LoraWeight("a"), LoraWeight("b"), LoraWeight("a", 0.5)), OPEN)
    assert twice.value.param == "lora[2].path_or_id"
    check_lora(no_lora, (), OPEN)  # no adapters: nothing to refuse
