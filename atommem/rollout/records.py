"""What the driver asks a rollout worker to play and the small summary it gets back.

The driver only ever holds an `EpisodeRequest` (a sample and ids) going out and a `TrajectorySummary`
(scalars) coming back; the token lists stay in the `Trajectory` object behind an ObjectRef.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from atommem.data.schema import Sample
from atommem.trajectory import Trajectory


@dataclass
class EpisodeRequest:
    episode_id: str  # unique per played episode; the exactly-once key
    uid: str  # GRPO group key (sample id plus a step nonce when a sample is replayed)
    group_index: int  # which of the n rollouts of this uid
    sample: Sample
    seed: int  # seeds the env and scripted policies of this episode


@dataclass
class TrajectorySummary:
    episode_id: str
    uid: str
    group_index: int
    reward: float
    num_turns: int
    generated_tokens: int
    correct: list[bool]
    action_counts: dict[str, int]
    num_errors: int
    min_weight_version: int
    source: str
    context_tokens: int
    f1: list[float] = field(default_factory=list)
    answers: list[str] = field(default_factory=list)  # per question ("" = unanswered): what an LLM judge grades
    worker: str = ""  # which EnvRunner played it
    state_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per turn state: {"turns": n, kind: count}

    @classmethod
    def of(cls, traj: Trajectory, worker: str = "") -> "TrajectorySummary":
        return cls(
            episode_id=traj.episode_id,
            uid=traj.uid,
            group_index=traj.group_index,
            reward=traj.reward,
            num_turns=traj.num_turns,
            generated_tokens=traj.generated_tokens,
            correct=list(traj.correct),
            action_counts=dict(traj.action_counts),
            num_errors=traj.num_errors,
            min_weight_version=traj.min_weight_version,
            source=traj.source,
            context_tokens=traj.context_tokens,
            f1=list(traj.f1),
            answers=list(traj.answers),
            worker=worker,
            state_counts={k: dict(v) for k, v in traj.state_counts.items()},
        )


def make_requests(samples: list[Sample], group_size: int, *, nonce: str = "", seed: int = 0) -> list[EpisodeRequest]:
    """`group_size` requests per sample; uid = sample id (+ `@nonce`), episode id = uid#index.

    Pass a fresh `nonce` (e.g. the training step) whenever the same sample is played again, so groups
    and episode ids never collide across steps.
    """
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    ids = [s.id for s in samples]
    if len(set(ids)) != len(ids):
        dup = next(i for i in ids if ids.count(i) > 1)
        raise ValueError(f"sample id {dup!r} appears twice in one request batch; give each sample a unique id")
    out = []
    for k, sample in enumerate(samples):
        uid = f"{sample.id}@{nonce}" if nonce else sample.id
        for g in range(group_size):
            out.append(EpisodeRequest(f"{uid}#{g}", uid, g, sample, seed + k * group_size + g))
    return out
