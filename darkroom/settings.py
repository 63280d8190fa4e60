"""The one settings object (env prefix `DARKROOM_`), built by a factory so tests can make their own.

With nothing set, Darkroom runs embedded: a SQLite file, a local blob directory and kombu's
filesystem transport as the broker, all under `data_dir`. Setting the database, broker and S3
variables switches to Postgres, Redis and S3 with no code change.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated

from pydantic import field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelines.registry import TINY_MODELS


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

    # Comma-separated bearer keys. Empty means the server is open (logged loudly at start).
    api_keys: Annotated[tuple[str, ...], NoDecode] = ()

    # Models this deployment serves; each worker serves the ones named in its own settings.
    models: Annotated[tuple[str, ...], NoDecode] = TINY_MODELS
    models_dir: Path | None = None  # default: data_dir / "models"
    device: str = "cpu"

    # How long an image request waits for its job before answering with the job id.
    image_wait_timeout_s: float = 300.0
    max_upload_bytes: int = 20 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096
    # Written progress is throttled: at most one UPDATE per job per this many seconds.
    progress_interval_s: float = 0.5
    # Must exceed the longest job, or Redis hands an unacknowledged job to a second worker.
    broker_visibility_timeout_s: int = 4 * 3600
    # A worker child loads its pipelines before taking jobs; real weights can take minutes.
    pipeline_load_timeout_s: int = 1800
    result_retention_s: int = 7 * 24 * 3600

    @field_validator("api_keys", "models", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(item.strip() for item in value.split(",") if item.strip())
        return value

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


def get_settings() -> Settings:
    return Settings()
