"""Starting or joining Ray: the same entry points run under `ray job submit` and on a laptop."""

from __future__ import annotations

import os

from atommem.config import ClusterConfig


def init_ray(cluster: ClusterConfig | None = None, **kwargs) -> None:
    """Join the cluster when one is given (config, $RAY_ADDRESS, or a job's driver); else start a local Ray."""
    import ray

    if ray.is_initialized():
        return
    cluster = cluster or ClusterConfig()
    address = cluster.address or os.environ.get("RAY_ADDRESS")
    # Workers must import the same atommem as the driver; a local run shares the source tree.
    env_vars = {"HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "TOKENIZERS_PARALLELISM": "false"}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env_vars}, **kwargs)
        return
    system_config = {}
    if cluster.metrics_export_port is not None:
        kwargs.setdefault("_metrics_export_port", cluster.metrics_export_port)
        system_config["metrics_report_interval_ms"] = 1000
    ray.init(
        num_cpus=cluster.num_cpus,
        include_dashboard=cluster.include_dashboard,
        runtime_env={"env_vars": env_vars},
        log_to_driver=True,
        _system_config=system_config or None,
        **kwargs,
    )
