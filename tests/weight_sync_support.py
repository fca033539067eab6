"""A learner-side sender for engine tests: broadcast tensors to one engine the way training does."""

from __future__ import annotations

import threading
from typing import Any

from atommem.weight_sync.base import free_port
from atommem.weight_sync.process_group import WeightSender


async def sync_over_gloo(engine: Any, named_tensors: list, version: int, bucket_bytes: int = 1 << 16) -> dict:
    """Send `named_tensors` from a sender thread (rank 0) to `engine` (an `Engine`, or an engine actor handle)
    over a fresh gloo group; returns the engine's receive report."""
    port = free_port()
    sent: dict[str, Any] = {}

    def learner() -> None:
        sender = WeightSender("127.0.0.1", port, world_size=2, backend="gloo", timeout_s=60)
        sent["bytes"] = sender.send(named_tensors, bucket_bytes=bucket_bytes)
        sender.close()

    def call(method: str, *args: Any, **kwargs: Any) -> Any:
        fn = getattr(engine, method)
        return fn.remote(*args, **kwargs) if hasattr(fn, "remote") else fn(*args, **kwargs)

    thread = threading.Thread(target=learner)
    thread.start()
    try:
        await call("init_weight_sync", "127.0.0.1", port, rank=1, world_size=2, backend="gloo")
        report = await call("receive_weights", version)
    finally:
        thread.join(timeout=60)
    assert sent["bytes"] > 0
    return report
