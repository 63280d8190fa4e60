"""Accepting a generation job, one concern per module, in the order a request meets them:

- `model_choice`: which served model runs it, and its size;
- `params`: the request as the worker will run it (`JobParams`), checked against the model;
- `webhook_url`: where its terminal event goes, if anywhere;
- `idempotency`: a repeated `Idempotency-Key` answered with its first job;
- `admission`: the queue caps;
- `submit`: store the inputs, insert the job, commit, and only then publish its id.
"""
