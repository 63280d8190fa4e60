"""What a model is and what a request may ask of it, as plain data: the registry, size and frame
rules, request and result types, a job's stored parameters (`params.py`) and every rule about them
(`checks.py`), cache policies, LoRA naming, the parallel plan, the traits of each diffusers pipeline
class and the mask convention.

No module here imports torch, diffusers or transformers, at import or through another module
(tests/unit/pipelines/spec/test_torch_free.py): the API and the worker's parent process import
only this room. The other rooms (acceleration/, runners/, tiny/, the loader) import it.
"""
