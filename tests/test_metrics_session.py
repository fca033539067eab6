"""A driver that restarts Ray gets a fresh recorder: gauges of the ended session must not leak into the new one."""

import time

import ray

from atommem.config import ClusterConfig
from atommem.metrics import GAUGE_REFRESH_S, get_metrics
from atommem.runtime import init_ray
from tests.metrics_support import free_port, scrape, value, wait_for


def test_gauges_of_an_ended_session_never_reach_the_next_sessions_endpoint():
    if ray.is_initialized():
        ray.shutdown()
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    try:
        first = get_metrics()
        first.rollout_workers(7)
        first.queue_depth("stale", 7)
        assert get_metrics() is first
    finally:
        ray.shutdown()
    port = free_port()
    init_ray(ClusterConfig(num_cpus=1, metrics_export_port=port))
    try:
        second = get_metrics()
        assert second is not first
        second.queue_depth("fresh", 1)
        wait_for(port, {("ray_atommem_queue_depth", (("queue", "fresh"),)): 1.0})  # this session's export works
        # An old recorder still refreshing would have re-set its gauges twice by now.
        time.sleep(2 * GAUGE_REFRESH_S + 2)
        series = scrape(port)
        assert value(series, "ray_atommem_queue_depth", {"queue": "fresh"}) == 1.0
        assert value(series, "ray_atommem_queue_depth", {"queue": "stale"}) is None
        assert value(series, "ray_atommem_rollout_workers", {}) is None
    finally:
        ray.shutdown()
    first._refresher.join(timeout=30)  # the old recorder's refresher thread ended too
    assert not first._refresher.is_alive()
