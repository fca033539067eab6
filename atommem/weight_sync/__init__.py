"""Moving learner weights into inference engines: `base.py` (records, bucket plan), one module per transport."""
