"""AtomMem: learnable agentic memory with atomic CRUD operations, trained by SFT and GRPO on Ray."""

__version__ = "0.1.0"
