"""A driver that restarts Ray gets a fresh recorder: stale gauges must not leak into the new session."""

import ray

from atommem.metrics import Metrics, get_metrics


def test_new_ray_session_gets_a_new_recorder():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        first = get_metrics()
        first.rollout_workers(2)
        assert isinstance(first, Metrics) and get_metrics() is first
    finally:
        ray.shutdown()
    first._refresher.join(timeout=30)  # its gauge refresher notices the session ended and stops
    assert not first._refresher.is_alive() and not first._live
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        second = get_metrics()
        assert isinstance(second, Metrics) and second is not first
        assert not first._live and second._live  # the old recorder stopped re-setting its gauges
    finally:
        ray.shutdown()
