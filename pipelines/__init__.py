"""Model registry, loading and running of diffusers pipelines, in four rooms and one entry.

- `spec/`: what a model is and what a request may ask of it, as plain data; never imports torch,
  diffusers or transformers, so the API and the worker's parent process import only this room.
- `acceleration/`: attention backends, compile, cache hooks, offload and the memory check,
  context and CFG parallelism over a group of ranks.
- `runners/`: one request through a loaded pipeline, a runner per family.
- `tiny/`: tiny random pipelines of the real classes, built offline, for tests and `make run`.
- `loader.py`: the one entry the worker calls: find a model's weights, load its pipeline, apply
  the acceleration, and return its runner. `processor_compat.py` lets the Qwen edit processor load
  without torchvision (the loader and the tiny builders use it).

A room imports only the rooms before it (spec, then acceleration, then runners; tiny needs spec and
processor_compat only); tests/unit/pipelines/test_rooms.py keeps it so.
"""
