"""Starting or joining Ray: the same entry points run under `ray job submit` and on a laptop."""

from __future__ import annotations

import json
import os

from atommem.config import ClusterConfig
from atommem.stopping import reinstall


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
        # Under `ray job submit` the job's runtime env applies already; ray.init may not repeat its env vars.
        job_env = _submitted_job_env_vars()
        env_vars = {k: v for k, v in env_vars.items() if k not in job_env}
        ray.init(address=address, runtime_env={"env_vars": env_vars}, **kwargs)
        reinstall()  # Ray's driver aborts on SIGTERM; a command running under stop_on_signals() drains instead
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
    reinstall()


def _submitted_job_env_vars() -> dict[str, str]:
    """Env vars set by the runtime env of the submitted job this driver runs in ({} outside a job)."""
    from ray._private.runtime_env.constants import RAY_JOB_CONFIG_JSON_ENV_VAR
    from ray.job_config import JobConfig

    raw = os.environ.get(RAY_JOB_CONFIG_JSON_ENV_VAR)
    if not raw:
        return {}
    runtime_env = JobConfig.from_json(json.loads(raw)).runtime_env or {}
    return dict(runtime_env.get("env_vars") or {})
