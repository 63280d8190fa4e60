# One image for every Darkroom process (api, worker, webhook-worker, sweeper, flower, migrate).
# CPU torch by default; docker-compose.yml builds the CUDA and ROCm workers from this same file
# with another TORCH_INDEX_URL. PyTorch's wheels carry their CUDA / ROCm runtime, so a slim base
# works on a GPU host too: the driver comes from the host.
FROM python:3.12-slim

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# pyproject.toml's torch and nothing else by default; GPU builds add torchvision (docs/models.md "Which torch").
ARG TORCH_PACKAGES=torch

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HOME=/var/lib/darkroom/models/huggingface

# torch first and from its own index only: `pip install .` then finds torch>=2.6 satisfied
# instead of pulling PyPI's multi-GB CUDA build into the CPU image.
RUN pip install --index-url "$TORCH_INDEX_URL" $TORCH_PACKAGES

# The CUDA worker's FlashAttention-2 (diffusers' `flash` backend): a prebuilt wheel whose torch,
# CUDA major, C++ ABI and Python match this image exactly (a source build takes about an hour).
# Empty for the CPU and ROCm images. The import check fails the build on a mismatched wheel
# rather than leaving the worker to fall back to SDPA at run time.
ARG FLASH_ATTN_WHEEL=
RUN if [ -n "$FLASH_ATTN_WHEEL" ]; then \
        pip install "$FLASH_ATTN_WHEEL" \
        && python -c "import flash_attn, flash_attn_2_cuda; print('flash-attn', flash_attn.__version__)"; \
    fi

WORKDIR /src
COPY pyproject.toml README.md ./
COPY darkroom ./darkroom
COPY api ./api
COPY worker ./worker
COPY storage ./storage
COPY pipelines ./pipelines
COPY migrations ./migrations

# storage/db.py finds migrations/ beside the installed packages, and the wheel does not ship it
# (it is not a package), so it is copied there; the check fails the build if that ever breaks.
# It runs from / so that the installed copy is imported, not /src.
RUN pip install . \
    && site="$(cd / && python -c 'import pathlib, storage; print(pathlib.Path(storage.__file__).parent.parent)')" \
    && mkdir -p "$site/migrations" \
    && cp -r migrations/. "$site/migrations/" \
    && cd / \
    && python -c "from storage.db import MIGRATIONS_DIR as d; assert (d / 'env.py').is_file(), d" \
    && darkroom --help > /dev/null \
    && rm -rf /src

# Named volumes mounted here start with this ownership, so the non-root user can write them.
WORKDIR /var/lib/darkroom
RUN useradd --system --uid 10001 --home-dir /var/lib/darkroom darkroom \
    && mkdir -p /var/lib/darkroom/models \
    && chown -R darkroom:darkroom /var/lib/darkroom
USER darkroom
ENV DARKROOM_DATA_DIR=/var/lib/darkroom

EXPOSE 8000 5555
# `docker run` alone gets the embedded mode: SQLite, local blobs, one worker, all in the data dir.
CMD ["darkroom", "run", "--host", "0.0.0.0", "--port", "8000"]
