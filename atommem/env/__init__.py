"""The memory environment: chunking, prompts, the gymnasium `MemoryEnv`, reward.

Names are imported lazily so `import atommem.env.reward` stays light (no gymnasium, no numpy).
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "MemoryEnv": "atommem.env.memory_env",
    "Observation": "atommem.env.observation",
    "StepInfo": "atommem.env.memory_env",
    "EpisodeResult": "atommem.env.memory_env",
    "make_env": "atommem.env.memory_env",
    "register_rllib_env": "atommem.env.memory_env",
    "render_messages": "atommem.env.prompts",
    "chunk_documents": "atommem.env.chunking",
    "episode_reward": "atommem.env.reward",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'atommem.env' has no attribute {name!r}")
