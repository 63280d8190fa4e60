"""Retention, run by the sweeper: a completed job's blobs are deleted once its `expires_at` has
passed, and the job is marked expired, so `/content` can say "expired" rather than "not found";
a file of the Files API past its `expires_at` (already invisible to every caller) has its blob
deleted, then its row marked deleted. The rows themselves stay as the record of what was kept."""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session

from storage import files, jobs, overdue
from storage.blobs import BlobStore

log = logging.getLogger("darkroom.retention")


def expire_results(session: Session, blobs: BlobStore, *, batch: int) -> int:
    """Delete the blobs of up to `batch` jobs past their retention; how many were expired."""
    due = overdue.past_retention(session, limit=batch)
    session.rollback()  # no transaction stays open while the blob store is called
    expired = 0
    for job_id in due:
        # Marked first, so `/content` says "expired" from the moment the blobs start to go.
        if not jobs.mark_expired(session, job_id):
            continue  # another sweeper got there first
        # Inputs too: they outlive their job only when `keep_inputs` is set, and then until here;
        # and a streamed image's previews (worker/previews.py).
        if not delete_blobs(blobs, f"outputs/{job_id}", f"inputs/{job_id}", f"partials/{job_id}"):
            jobs.unmark_expired(session, job_id)  # the store is away: the next tick tries again
            break
        expired += 1
    if expired:
        log.info("expired the results of %d jobs", expired)
    return expired


def delete_expired_files(session: Session, blobs: BlobStore, *, batch: int) -> int:
    """Delete the blobs of up to `batch` files past their expiry (or deleted by a request that
    could not reach the store); how many were deleted."""
    due = files.past_expiry(session, limit=batch)
    session.rollback()  # no transaction stays open while the blob store is called
    deleted = 0
    for file_id in due:
        try:
            blobs.delete(files.blob_key(file_id))
        except Exception as error:  # noqa: BLE001 - S3 and filesystem errors share no base class
            log.warning("could not delete the blob of file %s: %s", file_id, error)
            break  # the store is away: the next tick tries again
        if files.mark_deleted(session, file_id):
            deleted += 1
    if deleted:
        log.info("deleted %d expired files", deleted)
    return deleted


def attempt_prefixes(job_id: str, attempt: int) -> tuple[str, str]:
    """Where one attempt of a job stores its outputs and its previews. Each attempt writes under its
    own prefixes, so a run presumed lost can never overwrite or delete the blobs of the run that
    replaced it; the blobs of a run that did not finish are deleted under them."""
    return f"outputs/{job_id}/{attempt}", f"partials/{job_id}/{attempt}"


def delete_blobs(blobs: BlobStore, *prefixes: str) -> bool:
    """Delete everything under `prefixes`; False (and a warning) if the store failed."""
    try:
        for prefix in prefixes:
            blobs.delete_prefix(prefix)
    except Exception as error:  # noqa: BLE001 - S3 and filesystem errors share no base class
        log.warning("could not delete blobs under %s: %s", ", ".join(prefixes), error)
        return False
    return True
