"""The one settings object (env prefix `DARKROOM_`), built by a factory so tests can make their own.

With nothing set, Darkroom runs embedded: a SQLite file, a local blob directory and kombu's
filesystem transport as the broker, all under `data_dir`. Setting the database, broker and S3
variables switches to Postgres, Redis and S3 with no code change.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from darkroom.data_url import data_url_chars
from darkroom.keys import KeyWebhook, owner_of_key, webhook_secret
from darkroom.outbound import parse_allowed_entry
from pipelines.spec.cache_policy import CachePolicy
from pipelines.spec.checks import Deployment, ParamRefused, check_cache
from pipelines.spec.lora_names import DEFAULT_MAX_ADAPTER_BYTES
from pipelines.spec.parallel_plan import ParallelPlan
from pipelines.spec.registry import REGISTRY, TINY_MODELS


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DARKROOM_", frozen=True)

    data_dir: Path = Path(".darkroom")
    database_url: str | None = None  # default: sqlite file in data_dir
    broker_url: str | None = None  # default: filesystem transport in data_dir

    # Blob store: S3 when a bucket is named, else a local directory under data_dir.
    s3_bucket: str | None = None
    s3_endpoint_url: str | None = None
    s3_region: str = "us-east-1"
    s3_access_key_id: str | None = None
    s3_secret_access_key: str | None = None
    s3_prefix: str = ""
    # The S3 endpoint as clients reach it, when that differs from `s3_endpoint_url` (e.g. MinIO
    # inside compose): presigned `/content` redirects are signed for this host.
    s3_public_endpoint_url: str | None = None
    # `/content` answers with a 307 to a presigned S3 URL valid this long, instead of streaming
    # the bytes through the API. No effect with the local blob store (logged at start). At most
    # 7 days: SigV4 refuses longer-lived signatures.
    content_redirect: bool = False
    content_redirect_ttl_s: Annotated[int, Field(ge=1, le=7 * 24 * 3600)] = 300

    # Comma-separated bearer keys. Empty means the server is open (logged loudly at start).
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()

    # Models this deployment serves; each worker serves the ones named in its own settings.
    models: Annotated[tuple[str, ...], NoDecode] = TINY_MODELS
    models_dir: Path | None = None  # default: data_dir / "models"
    device: str = "cpu"
    # Acceleration (pipelines/acceleration/). "auto" picks the platform's best attention
    # backend that loads and passes the warm-up (FA3 on Hopper, FA2, Sage, aiter on ROCm, else
    # PyTorch SDPA); any diffusers backend name forces one, falling back to SDPA.
    attention_backend: str = "auto"
    compile_transformer: bool = False  # regional torch.compile, its graphs built by the warm-up
    warm_up: bool = True
    # JSON {"<model>": {"type": "first_block_cache", "threshold": 0.1}}: the cache each model's
    # jobs run with unless a request names one, over the registry's default.
    model_cache: dict[str, CachePolicy] = {}
    # Memory (pipelines/acceleration/memory.py). offload: "none" (all resident), "model" (one
    # component on the device at a time) or "group" (layers streamed from pinned CPU memory). A
    # worker refuses to start when a model's resident weights plus the headroom exceed the device's
    # free memory.
    offload: Literal["none", "model", "group"] = "none"
    vae_tiling: bool = False
    vae_slicing: bool = False
    # Free device memory a model needs beyond its weights (activations, VAE decode, allocator
    # slack), checked before loading. The warm-up then runs the default size for real and logs its
    # peak. On an H200, full-size Qwen-Image's 1024x1024 runs peaked at 76.7 GB with about 58 GB
    # of bf16 weights (bench/full_size.py): raise this for large models at large sizes.
    vram_headroom_gib: Annotated[float, Field(ge=0)] = 8.0
    # LoRA adapters per request (pipelines/spec/lora_names.py has the naming rule): found under this
    # directory (default `<data_dir>/loras`) or in the Hugging Face cache, never downloaded; at
    # most `lora_max_per_request` per request, and `lora_cache_size` kept loaded per model.
    lora_dir: Path | None = None
    lora_max_per_request: Annotated[int, Field(ge=1, le=16)] = 4
    lora_cache_size: Annotated[int, Field(ge=1, le=256)] = 8
    # An adapter file larger than this is refused before it is read (pipelines/spec/lora_names.py).
    lora_max_bytes: Annotated[int, Field(ge=1)] = DEFAULT_MAX_ADAPTER_BYTES

    # How long an image request waits for its job before answering with the job id.
    image_wait_timeout_s: float = 300.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096
    # Request edges (api/request_body.py, api/bodies.py). A body is counted while it streams in
    # and refused (413) past `max_request_bytes`; None: room for the largest request a model
    # takes (its most input images and a mask, each a data: URL at `max_upload_bytes`). A
    # multipart text field is at most `max_form_field_bytes`, except an `[image_url]` field,
    # which may carry a data: URL. Request headers: at most `max_header_bytes` (uvicorn).
    max_request_bytes: Annotated[int, Field(ge=1024)] | None = None
    max_form_field_bytes: Annotated[int, Field(ge=1024)] = 64 * 1024
    max_header_bytes: Annotated[int, Field(ge=4096)] = 32 * 1024
    # `/docs`, `/redoc` and `/openapi.json` need an API key unless this opens them.
    openapi_public: bool = False
    # `input_reference[image_url]`: the API fetches the image when the request arrives, within
    # `max_upload_bytes` and this many seconds overall (connect, headers and body), from public
    # https hosts only, unless plain http or a private host / CIDR is allowed here (checked like
    # webhook URLs). At most `image_url_max_fetches` at once, `image_url_max_fetches_per_key` of
    # them for one key; past either the request is refused at once (503, 429).
    image_url_timeout_s: Annotated[float, Field(gt=0)] = 10.0
    image_url_allow_http: bool = False
    image_url_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    image_url_max_fetches: Annotated[int, Field(ge=1)] = 16
    image_url_max_fetches_per_key: Annotated[int, Field(ge=1)] = 4
    # `POST /v1/files`: a file of any purpose, and a `batch` file's own caps (a `vision` file's
    # are the image limits above); past one the upload is a 413 at once, and nothing is kept.
    max_file_bytes: Annotated[int, Field(ge=1)] = 512 * 1024 * 1024
    max_batch_file_bytes: Annotated[int, Field(ge=1)] = 200 * 1024 * 1024
    max_batch_file_lines: Annotated[int, Field(ge=1)] = 50_000
    # A running job's row is read this often for a cancel (so the GPU stops within about a step)
    # and its progress and heartbeat are written every `heartbeat_interval_s`, all off the
    # denoising thread.
    job_watch_interval_s: float = 0.2
    heartbeat_interval_s: float = 2.0
    # A job running with no heartbeat for this long lost its worker: the sweeper requeues it, and
    # fails it once it has been started `max_attempts` times (a job that kills its worker).
    worker_lost_after_s: float = 60.0
    max_attempts: int = 3
    # Enforced by the worker itself: at the next step, and by ending its own process if the job
    # is still running `job_time_limit_grace_s` later (stuck outside the denoising loop).
    job_time_limit_s: float = 3600.0
    job_time_limit_grace_s: float = 60.0
    # An output upload that fails is retried with backoff for this long before the job fails.
    upload_retry_window_s: float = 120.0

    # The sweeper: publishes jobs whose publish failed, requeues jobs whose worker vanished,
    # republishes queued jobs whose message was lost (their queue is empty), hands due webhook
    # events to the webhook queue.
    sweep_interval_s: float = 1.0
    republish_after_s: float = 60.0

    # Admission control: past either cap a submission is refused with 429 and Retry-After.
    max_queued_jobs: int = 10_000
    max_queued_jobs_per_key: int = 1_000
    admission_retry_after_s: int = 30
    idempotency_window_s: int = 24 * 3600

    # Webhooks. `webhook_keys` is JSON: {"<api key>": {"url": "https://...", "secret": "whsec_..."}};
    # a key without its own secret signs with `webhook_secret`.
    webhook_secret: str | None = None
    webhook_keys: dict[str, KeyWebhook] = {}
    webhook_allow_http: bool = False
    # Hosts or CIDRs a webhook may reach even though they are private, loopback or link-local.
    webhook_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    webhook_timeout_s: float = 10.0
    webhook_backoff_base_s: float = 5.0
    webhook_backoff_max_s: float = 3600.0
    webhook_retry_window_s: float = 25 * 3600.0
    webhook_concurrency: int = 16
    # Must exceed the longest job, or Redis hands an unacknowledged job to a second worker.
    broker_visibility_timeout_s: int = 4 * 3600
    # A worker child loads its pipelines before taking jobs; real weights can take minutes.
    pipeline_load_timeout_s: int = 1800
    # A completed job's outputs (and any inputs kept) are deleted this long after it finished;
    # `/content` then answers 404 `content_expired`. Inputs go when the job ends unless kept.
    result_retention_s: int = 7 * 24 * 3600
    keep_inputs: bool = False
    # One JSON object per line (ts, level, logger, message, request_id/job_id, exception), or the
    # human text format.
    log_format: Literal["json", "text"] = "json"

    # `darkroom flower`. Basic auth is "user:password[,user2:password2]"; empty means none, and
    # then Flower's HTTP API is opened only on a loopback address (worker/flower.py says why).
    flower_port: int = 5555
    flower_address: str = "127.0.0.1"
    flower_basic_auth: str = ""

    # Every worker process (generation, webhooks, sweeper) refreshes its row this often; one
    # silent for 3 intervals shows as lost in /health/workers, and is forgotten after a day.
    worker_heartbeat_interval_s: float = 5.0
    worker_forget_after_s: float = 24 * 3600.0

    @field_validator("api_keys", "models", "webhook_allowed_hosts", "image_url_allowed_hosts", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret_format(cls, value: str | None) -> str | None:
        return webhook_secret(value)

    @field_validator("webhook_allowed_hosts", "image_url_allowed_hosts")
    @classmethod
    def _allowed_hosts_parse(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for entry in value:
            parse_allowed_entry(entry)  # raises with the entry named, at start-up, not per delivery
        return value

    @field_validator("model_cache")
    @classmethod
    def _model_cache_models(cls, value: dict) -> dict:
        for name in value:
            if name not in REGISTRY:
                raise ValueError(f"model_cache names an unknown model {name!r}")
        return value

    @model_validator(mode="after")
    def _sharded_takes_no_offload(self) -> Settings:
        if self.devices and self.offload != "none":
            # Sharding is how a group fits a model too big for one device; offloading under
            # diffusers' context-parallel hooks is a combination neither diffusers nor we have run.
            raise ValueError(
                f"offload={self.offload} does not combine with a sharded group (DARKROOM_DEVICES); "
                "shard over more devices instead, or run unsharded workers with offload"
            )
        return self

    @model_validator(mode="after")
    def _model_caches_can_run(self) -> Settings:
        # Whether they can run sharded is the worker's to check at start (worker/main.py): the API
        # shares these settings but not the worker's devices.
        for name, policy in self.model_cache.items():
            try:
                check_cache(REGISTRY[name], policy, Deployment(compiled=self.compile_transformer))
            except ParamRefused as refused:
                raise ValueError(f"model_cache: {refused.message}") from None
        return self

    @model_validator(mode="after")
    def _lora_cache_holds_a_request(self) -> Settings:
        if self.lora_cache_size < self.lora_max_per_request:
            raise ValueError(
                f"lora_cache_size ({self.lora_cache_size}) must hold a whole request's adapters "
                f"(lora_max_per_request, {self.lora_max_per_request})"
            )
        return self

    @cached_property
    def resolved_max_request_bytes(self) -> int:
        if self.max_request_bytes is not None:
            return self.max_request_bytes
        images = max(REGISTRY[name].max_input_images for name in self.models) + 1  # and a mask
        return images * data_url_chars(self.max_upload_bytes) + 1024 * 1024

    @cached_property
    def resolved_lora_dir(self) -> Path:
        return self.lora_dir or self.data_dir / "loras"

    @cached_property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'darkroom.db').resolve()}"

    @cached_property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @cached_property
    def resolved_models_dir(self) -> Path:
        return self.models_dir or self.data_dir / "models"

    @property
    def broker_is_embedded(self) -> bool:
        return self.resolved_broker_url.startswith("filesystem://")

    @property
    def auth_enabled(self) -> bool:
        return bool(self.api_keys)

    def signing_secret_for(self, owner: str) -> str | None:
        """The `whsec_` secret that signs this owner's deliveries: its key's own, else the default."""
        key_webhook = self._key_webhook(owner)
        return (key_webhook.secret if key_webhook else None) or self.webhook_secret

    def default_webhook_url_for(self, owner: str) -> str | None:
        """Where this owner's events go when a request names no webhook_url."""
        key_webhook = self._key_webhook(owner)
        return key_webhook.url if key_webhook else None

    def _key_webhook(self, owner: str) -> KeyWebhook | None:
        # Settings name keys; jobs record only the key's fingerprint.
        for api_key, key_webhook in self.webhook_keys.items():
            if owner_of_key(api_key) == owner:
                return key_webhook
        return None

    # ---- Sharded pipelines (pipelines/spec/parallel_plan.py, worker/rank_group.py) ----
    # One rank process per device, e.g. "cuda:0,cuda:1" (or "0,1"), or "cpu,cpu" to test sharding
    # with gloo. Empty: one process on `device`. The degrees' product must equal the device count.
    devices: Annotated[tuple[str, ...], NoDecode] = ()
    ulysses_degree: int = 1
    ring_degree: int = 1
    cfg_degree: int = 1  # 2: classifier-free guidance's two passes per step on two ranks
    # A collective (all-to-all, step flag, start-up barrier) waiting longer than this raises
    # instead of hanging; it also bounds a rank's pipeline load at start-up.
    rank_timeout_s: float = 300.0

    @field_validator("devices", mode="before")
    @classmethod
    def _device_list(cls, value: object) -> object:
        if isinstance(value, str):
            value = [item.strip() for item in value.split(",") if item.strip()]
        # A bare index names a GPU ("cuda" is also how ROCm builds of torch name theirs).
        return tuple(f"cuda:{item}" if str(item).isdigit() else str(item) for item in value)

    @cached_property
    def deployment(self) -> Deployment:
        """What a job's parameters are checked against (pipelines/spec/checks.py)."""
        return Deployment(
            compiled=self.compile_transformer,
            sharded=self.parallel_plan.context_parallel,
            lora_max_per_request=self.lora_max_per_request,
        )

    @cached_property
    def parallel_plan(self) -> ParallelPlan:
        return ParallelPlan(
            devices=self.devices,
            ulysses_degree=self.ulysses_degree,
            ring_degree=self.ring_degree,
            cfg_degree=self.cfg_degree,
            timeout_s=self.rank_timeout_s,
        )


def get_settings() -> Settings:
    return Settings()
