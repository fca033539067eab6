"""`GroupBuffer`: collects finished episodes by GRPO group (uid) and releases only complete groups.

Groups are keyed by uid, never formed by reshaping a flat batch, because trajectories of one sample
arrive in any order and have different turn counts. Optional dynamic filtering drops a completed group
whose rewards are all equal (zero advantage everywhere: no learning signal) and counts it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable

from atommem.rollout.records import TrajectorySummary

Entry = tuple[Any, TrajectorySummary]  # (ObjectRef[Trajectory], summary)
GroupFilter = Callable[[list[TrajectorySummary]], bool]  # True: keep the group


def has_reward_variance(summaries: list[TrajectorySummary]) -> bool:
    rewards = [s.reward for s in summaries]
    return max(rewards) != min(rewards)


class GroupBuffer:
    def __init__(self, group_size: int, *, dynamic_filter: bool = False, keep: GroupFilter | None = None):
        """`dynamic_filter`: drop groups with all-equal rewards; `keep`: any other predicate over a
        complete group's summaries (applied after the reward-variance check)."""
        if group_size < 1:
            raise ValueError(f"group_size must be >= 1, got {group_size}")
        self.group_size = group_size
        self._filters: list[GroupFilter] = ([has_reward_variance] if dynamic_filter else []) + ([keep] if keep else [])
        self._partial: dict[str, dict[int, Entry]] = {}
        self._complete: OrderedDict[str, list[Entry]] = OrderedDict()  # completion order
        self._seen: set[str] = set()  # episode ids added
        self.dropped_groups = 0
        self.dropped_episodes = 0

    def add(self, ref: Any, summary: TrajectorySummary) -> None:
        if summary.episode_id in self._seen:
            raise ValueError(f"episode {summary.episode_id!r} added to the buffer twice")
        if not 0 <= summary.group_index < self.group_size:
            raise ValueError(f"episode {summary.episode_id!r}: group_index {summary.group_index} outside [0, {self.group_size})")
        if summary.uid in self._complete:
            raise ValueError(f"group {summary.uid!r} is already complete; a uid must not be reused (add a nonce)")
        members = self._partial.setdefault(summary.uid, {})
        if summary.group_index in members:
            raise ValueError(f"group {summary.uid!r} already has rollout {summary.group_index}")
        self._seen.add(summary.episode_id)
        members[summary.group_index] = (ref, summary)
        if len(members) < self.group_size:
            return
        del self._partial[summary.uid]
        group = [members[i] for i in range(self.group_size)]
        if all(f([s for _, s in group]) for f in self._filters):
            self._complete[summary.uid] = group
        else:
            self.dropped_groups += 1
            self.dropped_episodes += len(group)

    def extend(self, items: list[Entry]) -> None:
        for ref, summary in items:
            self.add(ref, summary)

    def pop_groups(self, num_groups: int) -> list[list[Entry]]:
        """Up to `num_groups` complete groups, oldest first, each ordered by group_index."""
        out = []
        while self._complete and len(out) < num_groups:
            _, group = self._complete.popitem(last=False)
            out.append(group)
        return out

    @property
    def num_complete(self) -> int:
        return len(self._complete)

    @property
    def num_partial(self) -> int:
        return len(self._partial)

    def partial_sizes(self) -> dict[str, int]:
        return {uid: len(m) for uid, m in self._partial.items()}
