"""Storing a streamed image job's previews without holding up the denoising loop.

The pipeline hands each preview over from its step callback; a thread of this job encodes it in
the job's output format, uploads it to `partials/{job_id}/{attempt}/{index}.{format}` and writes
the list of keys stored so far onto the job row, where the API's streaming response finds it
(Postgres is the truth; nothing goes through the broker). At most three previews a job: a few small
writes. A preview is a courtesy: one that cannot be stored is logged and left out (the stream then
has fewer partial images, as OpenAI's may), and it never fails the job.
"""

from __future__ import annotations

import contextvars
import logging
import queue
import threading

from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from storage import jobs
from storage.blobs import BlobStore

log = logging.getLogger("darkroom.worker")

_CONTENT_TYPES = {"png": "image/png", "jpeg": "image/jpeg", "webp": "image/webp"}
_DONE = None


def partials_prefix(job_id: str) -> str:
    return f"partials/{job_id}"


class PreviewPublisher:
    """`publisher(index, image)` is the pipeline's preview callback (memory only); `close()` waits
    until every preview handed over is stored and recorded, so they precede the job's completion."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        blobs: BlobStore,
        job_id: str,
        attempt: int,
        *,
        fmt: str,
        quality: int,
    ) -> None:
        self.sessions = sessions
        self.blobs = blobs
        self.job_id = job_id
        self.attempt = attempt
        self.fmt = fmt
        self.quality = quality
        self.keys: list[str] = []
        self._queue: queue.SimpleQueue[tuple[int, Image.Image] | None] = queue.SimpleQueue()
        # In the job's log context, so the thread's lines carry its job_id too.
        self._thread = threading.Thread(
            target=contextvars.copy_context().run, args=(self._store_all,), name=f"previews-{job_id}", daemon=True
        )

    def __enter__(self) -> PreviewPublisher:
        self._thread.start()
        return self

    def __exit__(self, *_exc) -> None:
        self.close()

    def __call__(self, index: int, image: Image.Image) -> None:
        self._queue.put((index, image))

    def close(self) -> None:
        if self._thread.is_alive():
            self._queue.put(_DONE)
            self._thread.join()

    def _store_all(self) -> None:
        with self.sessions() as session:
            while (item := self._queue.get()) is not _DONE:
                index, image = item
                try:
                    self._store(session, index, image)
                except Exception as error:  # noqa: BLE001 - S3, encoder and database errors alike
                    session.rollback()
                    log.warning("job %s: preview %d was not stored: %s", self.job_id, index, error)

    def _store(self, session: Session, index: int, image: Image.Image) -> None:
        from worker.media import encode_image

        key = f"{partials_prefix(self.job_id)}/{self.attempt}/{index}.{self.fmt}"
        self.blobs.put(key, encode_image(image, self.fmt, quality=self.quality), _CONTENT_TYPES[self.fmt])
        if jobs.record_partials(session, self.job_id, attempt=self.attempt, partial_keys=[*self.keys, key]):
            self.keys.append(key)
