"""Baselines over the same MemoryEnv, data, engine and reward, registered as policies.

Model-driven (need engine, tokenizer, sampling): "memagent", "rag", "truncate".
Scripted, no model, synthetic data only (so the comparison runs on CPU without a trained model):
"memagent-scripted", "rag-scripted", "truncate-scripted", and "store-everything-scripted" (every fact line
into long-term memory, the naive CRUD workflow).
"""

from __future__ import annotations

from atommem.policies import register_policy

BASELINES: dict[str, str] = {
    "memagent": "atommem.baselines.memagent:MemAgentPolicy",
    "rag": "atommem.baselines.rag:RAGPolicy",
    "truncate": "atommem.baselines.truncate:TruncatePolicy",
    "memagent-scripted": "atommem.baselines.memagent:ScriptedMemAgentPolicy",
    "rag-scripted": "atommem.baselines.rag:ScriptedRAGPolicy",
    "truncate-scripted": "atommem.baselines.truncate:ScriptedTruncatePolicy",
    "store-everything-scripted": "atommem.baselines.store_all:ScriptedStoreEverythingPolicy",
}
# policies that play without an engine (everything else prompts a model)
SCRIPTED = frozenset({"oracle", "memagent-scripted", "rag-scripted", "truncate-scripted", "store-everything-scripted"})

for _name, _builder in BASELINES.items():
    register_policy(_name, _builder)


def needs_model(name: str) -> bool:
    return name not in SCRIPTED
