"""Persistence: the jobs table (the only truth about a job) and the blob store for media.

Every write to `jobs`, `webhook_events`, `webhook_deliveries` and `workers` is made here: a job's
row by `jobs`, its webhook event and the event's delivery attempts by `webhook_events`, worker
presence rows by `workers`; the sweeper finds what to repair with the queries of `overdue`.
Knows nothing of HTTP, Celery or diffusers.
"""
