"""The embedded mode's broker: kombu's filesystem transport, made safe to share between processes
that poll it every 50 ms. Kombu's own writes a message in place and its reader does not wait for
the writer's lock, so a consumer could take a message file still empty or cut short, and one
unreadable file raised in the worker, which exited and took `darkroom run` down with it.

- A message is written under a temporary name in the queue folder, fsynced, then renamed to its
  final name: a reader sees a whole message or none. A new exchange table is created the same way.
- A consumer claims a message by renaming it into `processed/`, beside the queue: one rename wins,
  and no copy is made (kombu moves it to the system's temporary folder, a copy when that is
  another filesystem).
- A file that is still not a message kombu can read (empty, cut short, not JSON: a disk fault, a
  hand edit) is moved to `rejected/` and logged once, and the consumer takes the next message. Its
  job stays queued in the database, so the sweeper publishes it again once its queue is empty
  (worker/sweeper.py, storage/overdue.py `published_long_ago`).

Celery takes it as the `broker_transport` class (worker/celery_app.py); kombu is not patched.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from queue import Empty
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.json import dumps, loads

log = logging.getLogger("darkroom.broker")

REJECTED_FOLDER = "rejected"


def write_whole(path: Path, data: bytes, *, replace: bool = True) -> None:
    """`data` at `path` all at once for every reader: written beside it under a temporary name,
    fsynced, then renamed (or, with `replace=False`, linked, which leaves an existing file be)."""
    temporary = path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp")
    try:
        with open(temporary, "wb") as file:
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        if replace:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                pass
    finally:
        temporary.unlink(missing_ok=True)


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):
        # Kombu's name: the timestamp orders the queue, and the part after the first dot says
        # which queue it is in (a temporary name never matches one).
        name = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        try:
            write_whole(Path(self.data_folder_out) / name, dumps(payload).encode())
        except OSError as error:
            raise ChannelError(f"Cannot add message {name!r} to {self.data_folder_out}") from error

    def _get(self, queue):
        folder, claimed_folder = Path(self.data_folder_in), Path(self.processed_folder)
        for name in sorted(os.listdir(folder)):
            if name.partition(".")[2] != f"{queue}.msg":
                continue
            claimed = claimed_folder / name
            try:
                os.rename(folder / name, claimed)
            except FileNotFoundError:
                continue  # another consumer claimed it first
            try:
                data = claimed.read_bytes()
            except OSError as error:
                raise ChannelError(f"Cannot read message {name!r}") from error
            payload = self._readable(data)
            if payload is None:
                self._reject(claimed, len(data))
                continue
            if not self.store_processed:
                claimed.unlink()
            return payload
        raise Empty()

    def _readable(self, data: bytes):
        """The message in `data`, if kombu can make a message of it; else None."""
        try:
            payload = loads(data.decode())
            self.Message(payload, channel=self)
        except Exception:  # whatever a damaged file makes kombu raise, it is not a message
            return None
        return payload

    def _reject(self, claimed: Path, size: int) -> None:
        rejected = Path(self.data_folder_in) / REJECTED_FOLDER / claimed.name
        rejected.parent.mkdir(exist_ok=True)
        os.replace(claimed, rejected)
        log.error(
            "broker message %s is not readable (%d bytes); moved to %s. Its job stays queued and "
            "the sweeper publishes it again.",
            claimed.name,
            size,
            rejected,
        )

    def _queue_bind(self, exchange, routing_key, pattern, queue):
        # Kombu creates the table by truncating then writing it, so a reader could find it empty
        # and fail to parse it: start it whole and empty here, and kombu then adds the binding
        # under its lock.
        table = self._exchange_file(exchange)
        if not table.exists():
            self.control_folder.mkdir(parents=True, exist_ok=True)
            write_whole(table, b"[]", replace=False)
        super()._queue_bind(exchange, routing_key, pattern, queue)


class Transport(filesystem.Transport):
    Channel = Channel

