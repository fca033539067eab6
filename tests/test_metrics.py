"""atommem.metrics: a no-op without Ray; under Ray the series reach the Prometheus endpoint and move."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.metrics_support import free_port, scrape, value, wait_for

GAUGE_IDLE_S = 30.0  # longer than Ray keeps a gauge that is not set again (about 20 s on Ray 2.60)


def test_noop_without_ray_and_does_not_import_ray():
    code = (
        "import sys\n"
        "from types import SimpleNamespace as N\n"
        "import atommem.metrics as m\n"
        "r = m.get_metrics()\n"
        "assert type(r) is m.NullMetrics, type(r)\n"
        "r.episode_finished(N(reward=1.0, correct=[True], action_counts={'create': 1}, num_errors=0,"
        " num_turns=1, generated_tokens=3, source='x'), worker='w')\n"
        "r.env_steps(1, 'w'); r.generated_tokens(3, 'e'); r.queue_depth('q', 2); r.rollout_workers(1)\n"
        "r.staleness([0, 1]); r.staleness(2); r.learner_step(0.1, 10, {'loss': 1.0}); r.weight_sync(0.1, 100)\n"
        "assert 'ray' not in sys.modules, 'metrics imported ray'\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"


@pytest.fixture(scope="module")
def ray_with_metrics():
    import ray

    from atommem.config import ClusterConfig
    from atommem.runtime import init_ray

    if ray.is_initialized():
        ray.shutdown()
    port = free_port()
    init_ray(ClusterConfig(num_cpus=2, metrics_export_port=port))
    try:
        yield port
    finally:
        ray.shutdown()


@pytest.mark.ray
def test_series_from_an_actor_reach_prometheus_and_move(ray_with_metrics):
    import ray

    port = ray_with_metrics

    @ray.remote(num_cpus=0)
    class Recorder:
        def record(self, round_: int) -> str:
            from types import SimpleNamespace  # pickled by value with the class: no test-module imports

            from atommem.metrics import get_metrics

            m = get_metrics()
            summary = SimpleNamespace(
                reward=1.0, correct=[True, False], action_counts={"create": 2, "read": 1, "error": 1},
                num_errors=1, num_turns=4, generated_tokens=50, source="model",
            )
            m.episode_finished(summary, worker="runner-7")
            m.env_steps(4, worker="runner-7")
            m.generated_tokens(50, engine="engine-0")
            m.queue_depth("buffer", 3 * round_)
            m.rollout_workers(round_)
            m.staleness([0, round_] if round_ == 1 else round_)  # per trajectory, or one value
            m.learner_step(0.5, 100, {"loss": 0.25 * round_, "note": "text is skipped"})
            m.weight_sync(0.2, 1 << 20)
            return type(m).__name__

    rec = Recorder.remote()
    assert ray.get(rec.record.remote(1)) == "Metrics"
    w = (("worker", "runner-7"), ("source", "model"))
    first = {
        ("ray_atommem_episodes_total", w): 1.0,
        ("ray_atommem_actions_total", w + (("kind", "create"),)): 2.0,
        ("ray_atommem_actions_total", w + (("kind", "error"),)): 1.0,
        ("ray_atommem_env_steps_total", (("worker", "runner-7"),)): 4.0,
        ("ray_atommem_generated_tokens_total", (("engine", "engine-0"),)): 50.0,
        ("ray_atommem_queue_depth", (("queue", "buffer"),)): 3.0,
        ("ray_atommem_rollout_workers", ()): 1.0,
        ("ray_atommem_staleness_max", ()): 1.0,
        ("ray_atommem_learner_metric", (("name", "loss"),)): 0.25,
        ("ray_atommem_learner_steps_total", ()): 1.0,
        ("ray_atommem_weight_sync_bytes_total", ()): float(1 << 20),
        ("ray_atommem_episode_reward_count", (("source", "model"),)): 1.0,
        ("ray_atommem_episode_em_count", (("source", "model"),)): 1.0,
        ("ray_atommem_questions_total", (("source", "model"),)): 2.0,
        ("ray_atommem_questions_correct_total", (("source", "model"),)): 1.0,
        ("ray_atommem_weight_sync_seconds_count", ()): 1.0,
        ("ray_atommem_learner_step_seconds_count", ()): 1.0,
    }
    series = wait_for(port, first)
    # EM 0.5 lands in the (0.4, 0.5] bucket, not in the "zero" bucket.
    assert value(series, "ray_atommem_episode_em_bucket", {"source": "model", "le": "1e-06"}) == 0.0
    assert value(series, "ray_atommem_episode_em_bucket", {"source": "model", "le": "0.5"}) == 1.0
    assert value(series, "ray_atommem_learner_metric", {"name": "note"}) is None

    assert ray.get(rec.record.remote(2)) == "Metrics"
    second = dict(first)
    second.update({
        ("ray_atommem_episodes_total", w): 2.0,
        ("ray_atommem_actions_total", w + (("kind", "create"),)): 4.0,
        ("ray_atommem_actions_total", w + (("kind", "error"),)): 2.0,
        ("ray_atommem_env_steps_total", (("worker", "runner-7"),)): 8.0,
        ("ray_atommem_generated_tokens_total", (("engine", "engine-0"),)): 100.0,
        ("ray_atommem_episode_em_count", (("source", "model"),)): 2.0,
        ("ray_atommem_questions_total", (("source", "model"),)): 4.0,
        ("ray_atommem_questions_correct_total", (("source", "model"),)): 2.0,
        ("ray_atommem_queue_depth", (("queue", "buffer"),)): 6.0,
        ("ray_atommem_rollout_workers", ()): 2.0,
        ("ray_atommem_staleness_max", ()): 2.0,
        ("ray_atommem_learner_metric", (("name", "loss"),)): 0.5,
        ("ray_atommem_learner_steps_total", ()): 2.0,
        ("ray_atommem_episode_reward_count", (("source", "model"),)): 2.0,
        ("ray_atommem_weight_sync_bytes_total", ()): float(2 << 20),
    })
    del second[("ray_atommem_weight_sync_seconds_count", ())]
    del second[("ray_atommem_learner_step_seconds_count", ())]
    wait_for(port, second)

    # Unchanged gauges stay visible: Ray drops a series not set for a while, the recorder re-sets them.
    time.sleep(GAUGE_IDLE_S)
    series = scrape(port)
    assert value(series, "ray_atommem_rollout_workers", {}) == 2.0
    assert value(series, "ray_atommem_learner_metric", {"name": "loss"}) == 0.5
