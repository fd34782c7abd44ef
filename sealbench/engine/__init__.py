"""The inner-loop engine: load a model, train K LoRA adapters at once, answer through them.

Only torch, transformers, pydantic and the standard library are imported here, so the engine runs
on the GPU box from a checkout (docs/architecture.md).
"""
