"""GRPO on a multi-node cluster run by Ray's real autoscaler (cluster/local: the fake multi-node provider
launches each rollout node as a local raylet), in one cluster start:

1. Scale-up: the rollout pool asks for two runners; they need `rollout_cpu`, which only rollout nodes have,
   so the autoscaler adds two nodes and the runners are placed on them.
2. Node loss: mid-step, one runner's node is killed (its raylet, workers and agents). Ray restarts that
   runner on a node the autoscaler adds and replays its episodes; the step completes and trains each
   episode once.
3. Scale-down: the pool retires its idle runners and withdraws its resource request; the autoscaler
   removes the idle nodes after `idle_timeout_minutes`.

The timeline (nodes added and removed, the lost node's episodes and what became of them) is printed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from datetime import datetime
from pathlib import Path

import pytest
import yaml
from ray._private.authentication.authentication_token_setup import _enable_token_auth

from atommem.config import load_config
from helpers_models import TEST_SYNTH, make_tiny_model_dir
from process_support import local_cluster_script
from test_fault_tolerance import trained_episodes

ROOT = Path(__file__).resolve().parents[1]
CLUSTER = [sys.executable, str(ROOT / "cluster" / "local" / "cluster.py")]
RESOURCE = "rollout_cpu"
GROUPS, GROUP_SIZE = 2, 2
# GCS pings each raylet every second (default 3 s): a killed node is declared dead after ~5 failed pings.
FAST_NODE_DEATH = {"health_check_period_ms": 1000}


def test_the_local_cluster_has_ray_cluster_yamls_node_layout():
    """Cheap, no Ray: the fake cluster's config passes Ray's schema and mirrors ray_cluster.yaml's rollout nodes."""
    from ray.autoscaler._private.util import validate_config

    local = yaml.safe_load((ROOT / "cluster/local/autoscaling.yaml").read_text())
    cloud = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())
    validate_config(local)
    assert local["provider"]["type"] == "fake_multinode"
    types = local["available_node_types"]
    assert RESOURCE not in types[local["head_node_type"]]["resources"]
    rollout = [t for name, t in types.items() if name != local["head_node_type"]]
    assert [t["min_workers"] for t in rollout] == [0] and rollout[0]["max_workers"] >= 2
    assert RESOURCE in rollout[0]["resources"] and RESOURCE in cloud["available_node_types"]["cpu_rollout"]["resources"]
    assert RESOURCE not in cloud["available_node_types"][cloud["head_node_type"]]["resources"]


@pytest.fixture(scope="module")
def local_cluster(tmp_path_factory):
    """cluster/local/cluster.py up (free ports, own temp dir and session), then down."""
    import ray

    if ray.is_initialized():
        ray.shutdown()
    directory = tmp_path_factory.mktemp("local_cluster")
    up = subprocess.run([*CLUSTER, "up", "--dir", str(directory), "--system-config", json.dumps(FAST_NODE_DEATH)],
                        capture_output=True, text=True, timeout=300)
    try:
        assert up.returncode == 0, f"cluster up failed:\n{up.stdout[-2000:]}\n{up.stderr[-3000:]}"
        info = json.loads(up.stdout.strip().splitlines()[-1])
        # `ray start --head` turns token auth on, and a driver given an address must ask for it (RAY_AUTH_MODE,
        # read once per process): what a local ray.init() does for itself.
        _enable_token_auth()
        try:
            yield info
        finally:
            ray.shutdown()
            print("autoscaler events:", *_autoscaler_events(Path(info["temp_dir"])), sep="\n  ")
    finally:
        down = subprocess.run([*CLUSTER, "down", "--dir", str(directory)], capture_output=True, text=True, timeout=120)
        assert down.returncode == 0, f"cluster down failed: {down.stderr[-2000:]}"


def _autoscaler_events(temp_dir: Path) -> list[str]:
    """The autoscaler's own summary lines (launches, terminations and why), from its log."""
    logs = sorted(temp_dir.glob("session_*/logs/monitor.log"))
    lines = logs[-1].read_text().splitlines() if logs else []
    return [f"{line[:19]} {line.split(':event_summary:')[1]}" for line in lines if ":event_summary:" in line]


class NodeWatch(threading.Thread):
    """Polls the GCS twice a second: when each rollout node (one with `rollout_cpu`) came up and went away."""

    def __init__(self):
        super().__init__(daemon=True)
        self.t0 = time.monotonic()
        self.events: list[dict] = []
        self.alive: set[str] = set()
        self._stop_event = threading.Event()

    def run(self) -> None:
        import ray

        while not self._stop_event.is_set():
            now = {n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get(RESOURCE)}
            for node in sorted(now - self.alive):
                self.mark("added", node=node)
            for node in sorted(self.alive - now):
                self.mark("removed", node=node)
            self.alive = now
            self._stop_event.wait(0.5)

    def mark(self, what: str, **info) -> None:
        self.events.append({"t_s": round(time.monotonic() - self.t0, 1), "at": datetime.now().strftime("%H:%M:%S.%f")[:-4],
                            "event": what, **info})

    def ids(self, what: str) -> set[str]:
        return {e["node"] for e in self.events if e["event"] == what}

    def wait_for(self, done, timeout_s: float, what: str) -> None:
        deadline = time.monotonic() + timeout_s
        while not done():
            assert time.monotonic() < deadline, f"{what} did not happen in {timeout_s:.0f}s; nodes: {self.events}"
            time.sleep(0.5)

    def stop(self) -> None:
        self._stop_event.set()
        self.join(timeout=10)


def _runner_actor(dashboard: str, group, index: int):
    """Runner `index`'s actor record (node, pid, state) from the cluster's state API."""
    from ray.util.state import get_actor

    return get_actor(group.handle(index)._actor_id.hex(), address=dashboard)


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_rollout_nodes_come_with_the_pool_a_lost_one_costs_no_episode_and_idle_ones_go(local_cluster, tmp_path):
    import ray

    from atommem.runtime import init_ray
    from atommem.tracking import RunLogger
    from atommem.trainer.grpo import GRPOTrainer

    model = make_tiny_model_dir(tmp_path)
    synth = {f"data.synth.{k}": json.dumps(v) for k, v in vars(TEST_SYNTH).items() if k != "num_samples"}
    cfg = load_config("configs/tiny_cpu.yaml", [
        f"cluster.address={local_cluster['address']}", f"data.train={tmp_path / 'data/train'}",
        f"data.dev={tmp_path / 'data/dev'}", "data.val=null", "data.synth.num_samples=8", "data.dev_samples=2",
        *[f"{k}={v}" for k, v in synth.items()], f"model.path={model}", "model.tiny=null",
        f"trainer.run_dir={tmp_path / 'run'}", "trainer.steps=2", "trainer.eval_every=0", "trainer.checkpoint_every=0",
        "trainer.time_budget_s=null", "trainer.tensorboard=false", f"grpo.batch_groups={GROUPS}",
        f"grpo.group_size={GROUP_SIZE}", "sampling.max_tokens=8", "engine.num_cpus=1", "learner.num_cpus=1",
        # one runner per rollout node (its CPU: 1); a runner takes 3 episodes, so the step's 4 need two
        f"rollout.worker_resource={RESOURCE}", "rollout.num_cpus_per_worker=1", "rollout.envs_per_worker=2",
        "rollout.num_workers=1", "rollout.min_workers=0", "rollout.max_workers=2",
        "rollout.scale_up_pending_per_worker=0", "rollout.scale_down_idle_s=60", "rollout.max_restarts=3",
    ])
    init_ray(cfg.cluster)
    head = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    watch = NodeWatch()
    watch.start()
    logger = RunLogger(cfg.trainer.run_dir, cfg, tensorboard=False)
    trainer = GRPOTrainer(cfg, str(model), logger)
    group = trainer.pool.group
    try:
        # 1. scale-up: two runners asked for, two rollout nodes added, one runner on each
        watch.mark("step 1 starts")
        with trained_episodes(trainer) as seen:
            first = trainer.step()
        placed = {i: _runner_actor(local_cluster["dashboard"], group, i).node_id for i in group.runner_indices()}
        watch.mark("step 1 done", runners_on=placed)
        assert len(placed) == 2 and len(set(placed.values())) == 2
        assert set(placed.values()) <= watch.ids("added") and not set(placed.values()) & head
        assert len(seen[0]) == len(set(seen[0])) == GROUPS * GROUP_SIZE == first["episodes"]

        # 2. node loss mid-step: the raylet of runner 0's node is killed with the step's episodes in flight
        victim = group.runner_indices()[0]
        actor = _runner_actor(local_cluster["dashboard"], group, victim)
        lost_node, node_pids = local_cluster_script().node_processes(local_cluster["pid"], actor.node_id)
        lost: dict[str, list[str]] = {}

        def kill_node():
            lost["episodes"] = group.in_flight_on(victim)
            for pid in node_pids:
                os.kill(pid, signal.SIGKILL)
            watch.mark("node killed", node=lost_node, runner=victim, processes=len(node_pids), episodes=lost["episodes"])

        submit = trainer._submit
        trainer._submit = lambda num_groups: (submit(num_groups), kill_node())  # every episode in flight, none done
        try:
            with trained_episodes(trainer) as seen:
                second = trainer.step()
        finally:
            del trainer._submit
        watch.mark("step 2 done")
        after = _runner_actor(local_cluster["dashboard"], group, victim)
        replayed = ray.get(group.handle(victim).stats.remote())["episodes"]  # by the restarted process
        (trained,) = seen
        print(f"lost node {lost_node}: runner {victim} restarted on {after.node_id} (pid {actor.pid} -> {after.pid}) "
              f"and played {replayed} episodes there; times each of the lost node's episodes was trained:",
              json.dumps({eid: trained.count(eid) for eid in lost["episodes"]}))
        assert lost["episodes"], "the kill landed when the runner had no episode in flight"
        assert lost_node in watch.ids("removed")
        assert after.node_id not in (lost_node, *placed.values()) and after.node_id in watch.ids("added")
        assert after.state == "ALIVE" and after.pid != actor.pid
        assert replayed == len(lost["episodes"])  # all of them played again, by the restarted runner
        assert len(trained) == len(set(trained)) == GROUPS * GROUP_SIZE == second["episodes"]
        assert set(lost["episodes"]) <= set(trained)
        assert group.duplicates_dropped == 0 and second["groups_dropped"] == 0

        # 3. scale-down: idle runners retired, the request withdrawn, the idle nodes removed
        trainer.cfg.rollout.scale_down_idle_s = 1.0
        watch.mark("scale-down starts")
        deadline = time.monotonic() + 60
        while trainer.pool.num_workers and time.monotonic() < deadline:
            trainer.pool.autoscale()  # what GRPOTrainer.run does between steps
            time.sleep(0.25)
        assert trainer.pool.num_workers == 0 and trainer.pool.requests[-1] == 0
        watch.mark("runners retired")
        watch.wait_for(lambda: not watch.alive, 180, "removing the idle rollout nodes")
        assert watch.ids("added") == watch.ids("removed")
        print("rollout pool over time:", json.dumps(trainer.pool.workers_over_time()))
    finally:
        watch.stop()
        print("rollout nodes:", *[json.dumps(e) for e in watch.events], sep="\n  ")
        trainer.shutdown()
        logger.close()
