"""Framework-neutral measurement core: sensors, meter, carbon, FLOPs, convergence, records, session.

Nothing in this package imports torch, keras, tensorflow, jax, transformers or lightning at import time.
"""
