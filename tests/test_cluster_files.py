"""Cluster files: the launcher YAML passes Ray's own schema, KubeRay manifests have their groups, and the
resources the code asks for (GPUs, rollout.worker_resource) exist on the node types that should have them."""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path

import pytest
import yaml

from atommem.config import load_config

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml"))
IMAGE_ROOT = "/home/ray/atommem"  # where cluster/Dockerfile puts the project


def _yaml(rel: str):
    return yaml.safe_load((ROOT / rel).read_text())


def _gpus_needed(cfg) -> float:
    engines = cfg.engine.num_engines * cfg.engine.num_gpus * cfg.engine.tensor_parallel_size
    learners = cfg.learner.num_learners * cfg.learner.num_gpus
    return engines + learners  # engines and learners never share a GPU


def _worker_resources() -> set[str]:
    return {c.rollout.worker_resource for c in map(load_config, CONFIGS) if c.rollout.worker_resource}


# ------------------------------------------------------------------------------------ ray_cluster.yaml


@pytest.fixture(scope="module")
def launcher():
    return _yaml("ray_cluster.yaml")


def test_launcher_has_the_required_keys(launcher):
    for key in ("cluster_name", "provider", "available_node_types", "head_node_type", "max_workers",
                "idle_timeout_minutes", "docker", "setup_commands", "head_start_ray_commands", "worker_start_ray_commands"):
        assert key in launcher, key
    assert launcher["head_node_type"] in launcher["available_node_types"]
    assert launcher["docker"]["image"]


def test_launcher_passes_rays_schema(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    validate_config(prepare_config(dict(launcher)))


def test_launcher_schema_check_can_fail(launcher):
    from ray.autoscaler._private.util import prepare_config, validate_config

    bad = yaml.safe_load(yaml.safe_dump(launcher))
    bad["available_node_types"]["cpu_rollout"]["min_worker"] = 0  # typo of min_workers
    with pytest.raises(Exception, match="min_worker"):
        validate_config(prepare_config(bad))


def _worker_types(launcher):
    head = launcher["head_node_type"]
    return {name: t for name, t in launcher["available_node_types"].items() if name != head}


def test_launcher_has_an_autoscaled_cpu_rollout_type_and_a_gpu_type(launcher):
    workers = _worker_types(launcher)
    rollout_types = {n: t for n, t in workers.items() if t["resources"].keys() & _worker_resources()}
    gpu_types = {n: t for n, t in workers.items() if t["resources"].get("GPU", 0) > 0}
    assert rollout_types and gpu_types
    for name, t in rollout_types.items():
        assert t["min_workers"] == 0, f"{name}: rollout nodes scale from zero"
        assert t["max_workers"] >= 1
        assert "GPU" not in t["resources"], f"{name}: rollout nodes are CPU-only"
    # the custom rollout resource exists only on rollout nodes, so runners never land on GPU nodes or the head
    for name, t in launcher["available_node_types"].items():
        if name not in rollout_types:
            assert not t.get("resources", {}).keys() & _worker_resources(), name
    assert sum(t["max_workers"] for t in workers.values()) <= launcher["max_workers"]
    assert launcher["available_node_types"][launcher["head_node_type"]]["resources"].get("CPU") == 0


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.name)
def test_launcher_nodes_hold_what_each_config_asks_for(launcher, path):
    cfg = load_config(path)
    types = list(launcher["available_node_types"].values())
    assert max(t["resources"].get("GPU", 0) for t in types) >= _gpus_needed(cfg)
    if cfg.rollout.worker_resource:
        hosts = [t for t in types if t["resources"].get(cfg.rollout.worker_resource, 0) > 0]
        assert hosts, f"no node type offers {cfg.rollout.worker_resource}"
        assert all(t["resources"]["CPU"] >= cfg.rollout.num_cpus_per_worker for t in hosts)
        assert sum(t["max_workers"] for t in hosts) >= 1


def test_launcher_exports_metrics_and_dashboard(launcher):
    head = " ".join(launcher["head_start_ray_commands"])
    assert "--dashboard-host=0.0.0.0" in head and "--metrics-export-port" in head
    assert "--metrics-export-port" in " ".join(launcher["worker_start_ray_commands"])


def test_launcher_turns_on_token_auth_on_every_node(launcher):
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        start = [c for c in launcher[key] if "ray start" in c]
        assert start and all("RAY_AUTH_MODE=token" in c for c in start), key
    assert "~/.ray/auth_token" in launcher["file_mounts"]


# ------------------------------------------------------------------------------------------- KubeRay


@pytest.fixture(scope="module")
def raycluster():
    return _yaml("cluster/kuberay/raycluster.yaml")


def _start_resources(group) -> dict:
    raw = group.get("rayStartParams", {}).get("resources")
    return json.loads(json.loads(raw)) if raw else {}  # KubeRay wants a quoted JSON string


def test_raycluster_groups_and_autoscaling(raycluster, launcher):
    assert raycluster["apiVersion"] == "ray.io/v1" and raycluster["kind"] == "RayCluster"
    spec = raycluster["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["authOptions"]["mode"] == "token"
    assert spec["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    groups = {g["groupName"]: g for g in spec["workerGroupSpecs"]}
    rollout = [g for g in groups.values() if _start_resources(g).keys() & _worker_resources()]
    gpu = [g for g in groups.values()
           if int(g["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu", 0)) > 0]
    assert len(rollout) == 1 and len(gpu) == 1
    assert rollout[0]["minReplicas"] == 0 and rollout[0]["maxReplicas"] >= 1
    assert "nvidia.com/gpu" not in rollout[0]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert not _start_resources(gpu[0]).keys() & _worker_resources()
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]
    for cfg in map(load_config, CONFIGS):
        assert int(gpu[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"]) >= _gpus_needed(cfg)
    images = {c["image"] for g in [spec["headGroupSpec"], *groups.values()] for c in g["template"]["spec"]["containers"]}
    assert images == {launcher["docker"]["image"]}


def test_rayjob_runs_a_job_entry_point_on_the_raycluster(raycluster):
    job = _yaml("cluster/kuberay/rayjob.yaml")
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert spec["clusterSelector"]["ray.io/cluster"] == raycluster["metadata"]["name"]
    argv = shlex.split(spec["entrypoint"])
    assert argv[0] == "python"
    script = Path(argv[1].replace(IMAGE_ROOT, str(ROOT)))
    assert script.parent == ROOT / "jobs" and script.is_file()
    config = Path(argv[argv.index("--config") + 1].replace(IMAGE_ROOT, str(ROOT)))
    load_config(config)
    assert isinstance(yaml.safe_load(spec["runtimeEnvYAML"])["env_vars"], dict)


def test_shared_volume_claim_is_read_write_many(raycluster):
    pvc = _yaml("cluster/kuberay/shared-pvc.yaml")
    assert pvc["kind"] == "PersistentVolumeClaim" and pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    claims = {v["persistentVolumeClaim"]["claimName"]
              for g in [raycluster["spec"]["headGroupSpec"], *raycluster["spec"]["workerGroupSpecs"]]
              for v in g["template"]["spec"]["volumes"] if "persistentVolumeClaim" in v}
    assert claims == {pvc["metadata"]["name"]}


# ----------------------------------------------------------------------------- runtime env, Dockerfile


def _requirement_name(req: str) -> str:
    return re.split(r"[<>=!~\[ ;]", req, maxsplit=1)[0].lower()


def _project_dependencies() -> set[str]:
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    return {_requirement_name(d) for d in deps}


def test_runtime_env_ships_the_checkout_and_the_project_dependencies():
    env = _yaml("cluster/runtime_env.yaml")
    assert env["working_dir"] == "."
    assert {".venv/", "runs/", ".git/"} <= set(env["excludes"])
    names = {_requirement_name(p) for p in env["pip"]["packages"]}
    assert names <= _project_dependencies(), names - _project_dependencies()
    assert not names & {"torch", "ray"}  # those must match the cluster image, never reinstalled per job
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in env["env_vars"].items())
    from ray.runtime_env import RuntimeEnv

    RuntimeEnv(**env)  # Ray accepts it


def test_dockerfile_builds_cuda_vllm_deepspeed_and_the_project(raycluster):
    text = (ROOT / "cluster" / "Dockerfile").read_text()
    base = re.search(r"^ARG CUDA_IMAGE=(\S+)", text, re.M).group(1)
    assert base.startswith("nvidia/cuda:") and "FROM ${CUDA_IMAGE}" in text
    assert re.search(r'pip install .*"vllm', text) and "deepspeed" in text
    ray_version = re.search(r"^ARG RAY_VERSION=(\S+)", text, re.M).group(1)
    assert ray_version == raycluster["spec"]["rayVersion"]
    for src in re.findall(r"^COPY --chown=\S+ (.+) \S+$", text, re.M):
        for part in src.split():
            assert (ROOT / part).exists(), f"COPY source {part} missing"
    assert re.search(r'pip install -e "/home/ray/atommem\[gpu\]"', text)


# ---------------------------------------------------------------------------------------------- Grafana


def _exported_series() -> set[str]:
    """Prometheus names of every series atommem.metrics defines (Ray adds `ray_`, counters `_total`)."""
    text = (ROOT / "atommem" / "metrics.py").read_text()
    names = set()
    for kind, name in re.findall(r'\b(counter|gauge|histogram)\("(\w+)"', text):
        base = f"ray_atommem_{name}"
        names |= {f"{base}_total"} if kind == "counter" else {base} if kind == "gauge" else {
            f"{base}_bucket", f"{base}_count", f"{base}_sum"}
    return names


def test_grafana_dashboard_queries_only_series_the_code_exports():
    dash = json.loads((ROOT / "cluster" / "grafana" / "atommem_dashboard.json").read_text())
    exported = _exported_series()
    assert "ray_atommem_episodes_total" in exported and "ray_atommem_learner_step_seconds_bucket" in exported
    used = set()
    for panel in dash["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used |= set(re.findall(r"\bray_atommem_\w+", target["expr"]))
    assert used <= exported, used - exported
    # the headline series (throughput, rewards, action rates, staleness, sync time, queue depths) are on the dashboard
    for series in ("ray_atommem_episodes_total", "ray_atommem_actions_total", "ray_atommem_rollout_workers",
                   "ray_atommem_queue_depth", "ray_atommem_staleness_max", "ray_atommem_learner_step_seconds_bucket",
                   "ray_atommem_weight_sync_seconds_bucket", "ray_atommem_generated_tokens_total"):
        assert series in used, series
