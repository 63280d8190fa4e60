"""Celery workers: take job ids from the queue, run the resident pipeline, store the result."""
