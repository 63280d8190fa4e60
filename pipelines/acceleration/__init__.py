"""What makes a loaded pipeline fast or lets it fit, all through diffusers and torch: attention
backends, regional compile, cache hooks per job, CPU offload and the memory check, and running one
request over a group of ranks (context parallelism, CFG parallelism).

Imports torch and diffusers; of Darkroom's own code only pipelines/spec/. The loader applies these
to a pipeline when it loads it, the runners per job.
"""
