"""Persistence: the jobs table (the only truth about a job) and the blob store for media.

Knows nothing of HTTP, Celery or diffusers.
"""
