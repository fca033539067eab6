"""Policies that play MemoryEnv episodes, and a registry of named policy factories.

Built-ins are resolved lazily ("module:attr") so that naming "oracle" never imports the engines.
Baselines register themselves with `register_policy(name, builder)`.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from atommem.errors import UserError
from atommem.policies.base import Policy, PolicyOutput

_REGISTRY: dict[str, Callable[..., Policy] | str] = {
    "atommem": "atommem.policies.model:ModelPolicy",
    "oracle": "atommem.policies.oracle:OraclePolicy",
}


def register_policy(name: str, builder: Callable[..., Policy] | str) -> None:
    """Register `builder(**kw) -> Policy` (or a "module:attr" path to one) under `name`."""
    _REGISTRY[name] = builder


def policy_names() -> list[str]:
    return sorted(_REGISTRY)


def _resolve(name: str) -> Callable[..., Policy]:
    if name not in _REGISTRY:
        raise UserError(f"unknown policy {name!r} (known: {', '.join(policy_names())})")
    builder = _REGISTRY[name]
    if isinstance(builder, str):
        module, _, attr = builder.partition(":")
        builder = getattr(importlib.import_module(module), attr)
        _REGISTRY[name] = builder
    return builder


def make_policy_factory(name: str, **kw: Any) -> Callable[..., Policy]:
    """A callable making a fresh policy per episode; keyword overrides at call time win over `kw`."""
    builder = _resolve(name)

    def factory(**more: Any) -> Policy:
        return builder(**{**kw, **more})

    return factory


__all__ = ["Policy", "PolicyOutput", "make_policy_factory", "policy_names", "register_policy"]
