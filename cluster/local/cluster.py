"""A multi-node Ray cluster on one machine, autoscaled by Ray's real autoscaler (cluster/local/autoscaling.yaml).

    python cluster/local/cluster.py up          # prints {"address", "dashboard", "dir", "pid", "temp_dir"} as JSON
    python cluster/local/cluster.py kill-node   # a node lost: a rollout node's raylet, workers and agents, SIGKILL
    python cluster/local/cluster.py down

`up` starts `ray start --head --block` with the fake multi-node provider (RAY_FAKE_CLUSTER=1): the
autoscaler launches rollout nodes as local raylets when work asks for `rollout_cpu` and terminates them once
idle. The head gets free ports and a temp dir of its own (short, under /tmp: Ray's socket paths must fit
107 bytes; linked as DIR/ray, deleted by `down`), and runs in a session of its own, so `down` stops exactly
this cluster: the provider's raylets and every worker belong to that session (workers have process groups
of their own, so a group kill alone would miss them). Never `ray stop` here: it stops every Ray on the
machine. The dashboard's job API wants RAY_AUTH_MODE=token (~/.ray/auth_token).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFAULT_DIR = Path("/tmp/atommem-local-cluster")
PORTS = ["port", "dashboard-port", "dashboard-agent-listen-port", "dashboard-agent-grpc-port", "ray-client-server-port",
         "metrics-export-port", "runtime-env-agent-port", "node-manager-port", "object-manager-port"]
STOP_GRACE_S = 5.0  # SIGTERM, then SIGKILL what is left of the session


def free_ports(n: int) -> list[int]:
    """n distinct free local ports (all bound at once, then released)."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def session_pids(sid: int) -> list[int]:
    """Running processes of session `sid` (zombies excluded: nothing reaps them here)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat="], capture_output=True, text=True).stdout
    return [int(p) for p, s, stat in (line.split() for line in out.splitlines() if line.strip())
            if int(s) == sid and "Z" not in stat]


def _rollout_raylets(sid: int) -> dict[str, int]:
    """Node id -> raylet pid of the session's live rollout nodes (the provider names each node in the
    raylet's environment; the head's raylet has no node type there)."""
    out = subprocess.run(["ps", "-eo", "pid=,sid=,stat=,comm="], capture_output=True, text=True).stdout
    raylets = {}
    for pid, s, stat, comm in (line.split(None, 3) for line in out.splitlines() if line.strip()):
        if int(s) != sid or comm.strip() != "raylet" or "Z" in stat:
            continue
        try:
            env = dict(v.split("=", 1) for v in Path(f"/proc/{pid}/environ").read_text().split("\0") if "=" in v)
        except OSError:
            continue  # exited meanwhile
        if env.get("RAY_NODE_TYPE_NAME") and env.get("RAY_OVERRIDE_NODE_ID_FOR_TESTING"):
            raylets[env["RAY_OVERRIDE_NODE_ID_FOR_TESTING"]] = int(pid)
    return raylets


def node_processes(sid: int, node_id: str | None = None) -> tuple[str, list[int]]:
    """Rollout node `node_id` (default: the newest) of session `sid`: its id, and its raylet and every process
    under it (workers, agents), which is what a lost machine takes with it. The raylet alone is not enough:
    its workers go on serving their callers directly for a while."""
    raylets = _rollout_raylets(sid)
    if not raylets or (node_id is not None and node_id not in raylets):
        raise SystemExit(f"no live rollout node {node_id or ''} in this cluster (live: {sorted(raylets)})")
    node_id = node_id or max(raylets)
    out = subprocess.run(["ps", "-eo", "pid=,ppid="], capture_output=True, text=True).stdout
    parent = {int(p): int(pp) for p, pp in (line.split() for line in out.splitlines() if line.strip())}
    tree = [raylets[node_id]]
    for pid in tree:
        tree += [child for child, pp in parent.items() if pp == pid]
    return node_id, tree


def kill_node(directory: Path, node_id: str | None = None) -> dict:
    sid = json.loads(_state_file(directory).read_text())["pid"]
    node_id, pids = node_processes(sid, node_id)
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return {"node": node_id, "killed": pids}


def _state_file(directory: Path) -> Path:
    return directory / "cluster.json"


def up(directory: Path, config: Path, timeout_s: float, system_config: dict | None = None) -> dict:
    """Start the head with the autoscaler; return once the dashboard answers."""
    directory.mkdir(parents=True, exist_ok=True)
    state = _state_file(directory)
    if state.exists() and session_pids(json.loads(state.read_text())["pid"]):
        raise SystemExit(f"a cluster from {directory} is running: `python {__file__} down --dir {directory}` first")
    import ray._private.services as services

    ports = dict(zip(PORTS, free_ports(len(PORTS))))
    address = f"{services.get_node_ip_address()}:{ports['port']}"
    cluster = yaml.safe_load(config.read_text())
    cluster["provider"]["gcs_address"] = address  # the provider's raylets join this head, not port 6379
    head = cluster["available_node_types"][cluster["head_node_type"]]["resources"]
    (directory / "autoscaling.yaml").write_text(yaml.safe_dump(cluster))
    temp = Path(tempfile.mkdtemp(prefix="atommem-ray-"))
    link = directory / "ray"
    link.unlink(missing_ok=True)
    link.symlink_to(temp)
    venv_bin = Path(sys.executable).parent
    cmd = [str(venv_bin / "ray"), "start", "--head", "--block", f"--autoscaling-config={directory / 'autoscaling.yaml'}",
           f"--num-cpus={head['CPU']}", f"--object-store-memory={head['object_store_memory']}",
           f"--temp-dir={temp}", "--include-dashboard=true", "--dashboard-host=127.0.0.1",
           "--disable-usage-stats", *[f"--{name}={port}" for name, port in ports.items()]]
    if system_config:
        cmd.append(f"--system-config={json.dumps(system_config, separators=(',', ':'))}")
    # The venv first on PATH: job drivers and workers run the venv's python.
    env = {**os.environ, "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1",
           "PATH": f"{venv_bin}{os.pathsep}{os.environ.get('PATH', '')}"}
    env.pop("RAY_ADDRESS", None)
    with open(directory / "ray_start.log", "w") as log:
        # Every process starts in the checkout: a job submitted without --working-dir and its workers import
        # atommem from it and resolve the configs' relative paths there.
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True)
    info = {"address": address, "dashboard": f"http://127.0.0.1:{ports['dashboard-port']}", "dir": str(directory),
            "pid": proc.pid, "temp_dir": str(temp)}
    state.write_text(json.dumps(info))
    deadline = time.monotonic() + timeout_s
    while True:
        if proc.poll() is not None:
            raise SystemExit(f"ray start exited {proc.returncode}: {(directory / 'ray_start.log').read_text()[-3000:]}")
        try:
            urllib.request.urlopen(f"{info['dashboard']}/api/version", timeout=5)
            return info
        except urllib.error.HTTPError:  # answering (401 without the token is an answer)
            return info
        except OSError:
            if time.monotonic() > deadline:
                down(directory)
                raise SystemExit(f"the dashboard at {info['dashboard']} did not answer in {timeout_s:.0f}s "
                                 f"(see {directory / 'ray_start.log'})")
            time.sleep(1)


def down(directory: Path) -> list[int]:
    """Stop the cluster started from `directory`; returns the pids that had to be SIGKILLed."""
    state = _state_file(directory)
    if not state.exists():
        return []
    info = json.loads(state.read_text())
    sid = info["pid"]
    try:
        os.killpg(sid, signal.SIGTERM)  # ray start, GCS, autoscaler, every raylet: they share the group
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + STOP_GRACE_S
    while (left := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in left:  # GCS and `ray start --block` outlast SIGTERM; workers sit in their own groups
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + STOP_GRACE_S
    while (alive := session_pids(sid)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive:
        raise SystemExit(f"processes {alive} of the cluster in {directory} survived SIGKILL")
    shutil.rmtree(info["temp_dir"], ignore_errors=True)
    (directory / "ray").unlink(missing_ok=True)
    state.unlink()
    return left


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["up", "kill-node", "down"])
    parser.add_argument("--dir", type=Path, default=DEFAULT_DIR, help="temp dir, logs and state of the cluster")
    parser.add_argument("--config", type=Path, default=HERE / "autoscaling.yaml", help="the autoscaler's cluster config")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait for the head")
    parser.add_argument("--system-config", type=json.loads, default=None, help="Ray system config (JSON) for the head")
    parser.add_argument("--node", default=None, help="kill-node: the node id (default: the newest rollout node)")
    args = parser.parse_args(argv)
    if args.command == "up":
        print(json.dumps(up(args.dir.resolve(), args.config, args.timeout, args.system_config)))
    elif args.command == "kill-node":
        print(json.dumps(kill_node(args.dir.resolve(), args.node)))
    else:
        down(args.dir.resolve())


if __name__ == "__main__":
    main()
