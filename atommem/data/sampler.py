"""`EpochSampler`: the seeded, resumable order in which training samples (or SFT trajectories) are drawn."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from atommem.errors import UserError


@dataclass
class EpochSampler:
    """Seeded, resumable sample order: a fresh permutation per epoch; the state is (epoch, pos)."""

    size: int
    seed: int = 0
    epoch: int = 0
    pos: int = 0
    _order: list[int] = field(default_factory=list, repr=False)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise UserError("the training set is empty: point data.train at a non-empty Parquet dir")
        self._order = self._permutation(self.epoch)

    def _permutation(self, epoch: int) -> list[int]:
        order = list(range(self.size))
        random.Random(f"{self.seed}:{epoch}").shuffle(order)
        return order

    def take(self, k: int) -> list[int]:
        out: list[int] = []
        while len(out) < k:
            if self.pos >= self.size:
                self.epoch, self.pos = self.epoch + 1, 0
                self._order = self._permutation(self.epoch)
            n = min(k - len(out), self.size - self.pos)
            out += self._order[self.pos : self.pos + n]
            self.pos += n
        return out

    def state_dict(self) -> dict:
        return {"size": self.size, "seed": self.seed, "epoch": self.epoch, "pos": self.pos}

    @classmethod
    def from_state(cls, state: dict) -> "EpochSampler":
        return cls(size=state["size"], seed=state["seed"], epoch=state["epoch"], pos=state["pos"])
