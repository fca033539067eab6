"""`play_episode`: the one episode loop — a policy plays a reset `MemoryEnv` to the end, turn by turn.

Rollout workers, evaluation, serving, the tiny model's corpus builder and the benchmarks all call it, so
an episode means the same everywhere: the policy acts on the current observation, the env applies the
response (embedding through `embedder`, a `BatchingEmbedder` shared by many envs, when given) and the
token-level `Turn` is recorded exactly as the policy produced it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from atommem.trajectory import Turn

if TYPE_CHECKING:
    from atommem.env.memory_env import EpisodeResult, MemoryEnv
    from atommem.policies.base import Policy


@dataclass
class PlayedEpisode:
    turns: list[Turn]  # token-level, in play order
    infos: list[dict] = field(default_factory=list)  # each turn's `StepInfo` as a dict: action counts, errors
    result: "EpisodeResult | None" = None  # scores and final memory


async def play_episode(env: "MemoryEnv", policy: "Policy", *, embedder: Any = None, max_turns: int | None = None) -> PlayedEpisode:
    """Play `env` (already reset on its sample) with `policy` until it is done, or for `max_turns` turns."""
    turns: list[Turn] = []
    infos: list[dict] = []
    while not env.done and (max_turns is None or len(turns) < max_turns):
        phase = env.phase
        out = await policy.act(env)
        *_, info = await env.astep(out.text, complete=out.complete, embedder=embedder)
        turns.append(
            Turn(
                prompt_ids=list(out.prompt_ids or []),
                response_ids=list(out.response_ids or []),
                logprobs=list(out.logprobs or []),
                weight_version=out.weight_version,
                phase=phase,
                response_text=out.text,
                state=info["state"],
                engine_id=out.engine_id,
            )
        )
        infos.append(info)
    return PlayedEpisode(turns, infos, env.result())
