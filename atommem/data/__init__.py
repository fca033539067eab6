"""Samples: the Parquet schema (`schema.py`), builders from published datasets, the synthetic generator, the sampler."""
