"""Model registry, loading and running of diffusers pipelines.

Importing this package (and `pipelines.registry` / `pipelines.types`) never imports torch or
diffusers: the API validates requests against the registry without paying for them. The heavy
modules (`loader`, `runners`, `tiny`, `media`) import them on their own.
"""
