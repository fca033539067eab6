"""Token-level records of played episodes: what rollouts produce and the learner consumes.

Plain dataclasses (no Ray, no torch) so every layer can share them. Token ids are the ones the
engine saw and sampled; nothing is re-tokenized for training.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class Turn:
    prompt_ids: list[int]  # exactly the ids sent to the engine
    response_ids: list[int]  # exactly the ids sampled (including EOS when generated)
    logprobs: list[float]  # behaviour logprob of each response id
    weight_version: int  # policy version that generated this turn
    phase: str  # "read" | "answer"
    response_text: str = ""  # decoded response, for inspection only
    state: str = ""  # the env's label of this turn (`MemoryEnv.turn_state`: a chunk's kind, "answer", ...)
    engine_id: str = ""  # start id of the engine process that generated it ("" for scripted turns)


@dataclass
class Trajectory:
    uid: str  # GRPO group key: the sample id (plus a step nonce when a sample is replayed)
    group_index: int  # which of the n rollouts of this uid
    sample_id: str
    source: str
    turns: list[Turn]
    reward: float
    correct: list[bool]  # per question, exact match
    f1: list[float]  # per question
    answers: list[str]  # per question, the extracted answer ("" when none)
    action_counts: dict[str, int] = field(default_factory=dict)  # create/read/update/delete/scratchpad/answer/error
    num_errors: int = 0
    context_tokens: int = 0
    episode_id: str = ""  # unique per played episode (exactly-once bookkeeping)
    metadata: dict = field(default_factory=dict)
    state_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # per turn state: {"turns": n, kind: count}

    @property
    def num_turns(self) -> int:
        return len(self.turns)

    @property
    def generated_tokens(self) -> int:
        return sum(len(t.response_ids) for t in self.turns)

    @property
    def min_weight_version(self) -> int:
        return min((t.weight_version for t in self.turns), default=0)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Trajectory":
        d = dict(d)
        d["turns"] = [Turn(**t) for t in d["turns"]]
        return cls(**d)
