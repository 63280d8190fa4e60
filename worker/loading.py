"""Loading the served pipelines into a worker process: rank 0 (the worker's pool child,
worker/main.py) and every follower rank of a sharded group (worker/rank_group.py) call
`load_runners`, so it lives apart from both. Imports torch only when called: the worker's parent
process imports this module and must stay torch-free."""

from __future__ import annotations

import logging
import time

from darkroom.settings import Settings

log = logging.getLogger("darkroom.worker")


def load_runners(settings: Settings, rank: int = 0) -> dict:
    """Every served model, resident on this process's device. In a sharded group (every rank
    calls this; worker/rank_group.py) each transformer is sharded over the group, and the models
    load in the settings' order on every rank: sharding creates process groups, in step."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    diffusers_logging.disable_progress_bar()  # one bar per component per load, in a service log
    # Both libraries log through a stderr handler of their own, in their own format: route their
    # lines through the process's root handler instead (JSON lines, ids bound). Before the
    # pipelines are imported: importing them already logs (transformers' backend fallbacks).
    for library in (diffusers_logging, transformers_logging):
        library.disable_default_handler()
        library.enable_propagation()

    from pipelines.acceleration.memory import MemoryOptions, Offload
    from pipelines.loader import Acceleration, load_runner
    from pipelines.spec.registry import get_model

    acceleration = Acceleration(
        attention_backend=settings.attention_backend,
        compile=settings.compile_transformer,
        warm_up=settings.warm_up,
        cache=dict(settings.model_cache),
    )
    memory = MemoryOptions(
        offload=Offload(settings.offload),
        vae_tiling=settings.vae_tiling,
        vae_slicing=settings.vae_slicing,
        headroom_gib=settings.vram_headroom_gib,
    )
    plan = settings.parallel_plan
    device = plan.devices[rank] if plan.sharded else settings.device
    runners = {}
    for name in settings.models:
        started = time.perf_counter()
        runners[name] = load_runner(
            get_model(name),
            settings.resolved_models_dir,
            device,
            acceleration,
            parallel=plan if plan.sharded else None,
            memory=memory,
            lora_dir=settings.resolved_lora_dir,
            lora_cache_size=settings.lora_cache_size,
            lora_max_bytes=settings.lora_max_bytes,
        )
        log.info("loaded %s on %s in %.1f s", name, device, time.perf_counter() - started)
    return runners
