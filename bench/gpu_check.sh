#!/usr/bin/env bash
# The GPU paths on one CUDA GPU, within 8 minutes: prints one JSON summary on stdout and exits 0 when every
# part passed, 1 when one failed, 2 when it cannot run here (no CUDA GPU, no venv). Parts, one after the other,
# each under its own time limit (logs under $GPU_CHECK_DIR, default a new temporary directory):
#   gpu_tests    pytest -m gpu (the tests skipped without CUDA)                                  150 s
#   weight_sync  bench/weight_sync.py --backend nccl (GPU 0 -> GPU 1; NCCL refuses two ranks on one GPU,
#                so with one GPU it is reported as skipped, not run)                              60 s
#   vllm         bench/rollout_async.py --engine vllm (CUDA vLLM, eager: rollout and raw tokens/s)  120 s
#   grpo_step    atommem train for one step: the DeepSpeed ZeRO-3 learner on CUDA (bf16), the HF engine
#                on CPU (its weight sync goes over gloo from host memory)                         150 s
# Usage: bash bench/gpu_check.sh            (PYTHON=... to use another interpreter than .venv/bin/python)
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
DIR="${GPU_CHECK_DIR:-$(mktemp -d -t atommem-gpu-check-XXXXXX)}"
mkdir -p "$DIR"
START=$(date +%s)

fail_now() {  # cannot run here: one JSON line, exit 2
    printf '{"ok": false, "error": "%s", "logs": "%s"}\n' "$1" "$DIR"
    exit 2
}
[ -x "$PY" ] || fail_now "no Python at $PY: run make venv (on the GPU machine it installs the gpu extra) or set PYTHON"
GPUS=$("$PY" -c "import torch; print(torch.cuda.device_count() if torch.cuda.is_available() else 0)" 2>"$DIR/probe.err") \
    || fail_now "torch does not import: $(tail -n 1 "$DIR/probe.err" | tr -d '"\\')"
[ "$GPUS" -ge 1 ] || fail_now "no CUDA GPU visible to torch (torch.cuda.is_available() is False): run this on a machine with one"

part() {  # part NAME SECONDS COMMAND...: run it, keep its stdout, stderr, exit status and wall time
    local name=$1 limit=$2 t0
    shift 2
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" >"$DIR/$name.out" 2>"$DIR/$name.err"
    echo $? >"$DIR/$name.rc"
    echo $(($(date +%s) - t0)) >"$DIR/$name.seconds"
}

part gpu_tests 150 "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider --junitxml "$DIR/gpu_tests.xml" tests
if [ "$GPUS" -ge 2 ]; then
    part weight_sync 60 "$PY" bench/weight_sync.py --backend nccl --repeats 1
else
    echo "needs 2 GPUs: NCCL refuses two ranks on one GPU ('Duplicate GPU detected'); $GPUS here" >"$DIR/weight_sync.skipped"
fi
part vllm 120 "$PY" bench/rollout_async.py --engine vllm --vllm-eager --repeats 1 --vllm-episodes 64
part grpo_step 150 "$PY" -m atommem.cli train --config configs/tiny_cpu.yaml \
    --set model.path="$DIR/model" --set data.train="$DIR/data/train" --set data.dev="$DIR/data/dev" \
    --set data.val=null --set data.synth.num_samples=8 --set data.dev_samples=2 --set trainer.run_dir="$DIR/run" \
    --set trainer.steps=1 --set trainer.eval_every=0 --set trainer.checkpoint_every=0 --set trainer.time_budget_s=null \
    --set trainer.tensorboard=false --set grpo.batch_groups=2 --set grpo.group_size=2 --set sampling.max_tokens=16 \
    --set learner.num_gpus=1 --set engine.num_gpus=0

"$PY" - "$DIR" "$START" <<'PYTHON'
import json, subprocess, sys, time
import xml.etree.ElementTree as ET
from pathlib import Path

import torch

out, start = Path(sys.argv[1]), int(sys.argv[2])


def last_json(text):
    """The last top-level JSON object a bench printed (it may log other lines first)."""
    starts = [i for i, line in enumerate(text.splitlines()) if line.startswith("{")]
    lines = text.splitlines()
    for i in reversed(starts):
        try:
            return json.loads("\n".join(lines[i:]))
        except ValueError:
            continue
    return None


def result(name):
    if (out / f"{name}.skipped").exists():
        return {"ok": True, "skipped": (out / f"{name}.skipped").read_text().strip()}
    rc = int((out / f"{name}.rc").read_text())
    r = {"ok": rc == 0, "rc": rc, "seconds": int((out / f"{name}.seconds").read_text())}
    if rc == 124:
        r["error"] = "timed out"
    if name == "gpu_tests" and (out / "gpu_tests.xml").exists():
        root = ET.parse(out / "gpu_tests.xml").getroot()
        suite = root if root.tag == "testsuite" else root.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        r.update(counts, ok=rc == 0 and counts["tests"] > counts["skipped"])  # a run that skipped every test is no pass
    elif name == "grpo_step":
        rows = [json.loads(l) for l in (out / "run" / "metrics.jsonl").read_text().splitlines()] if (out / "run" / "metrics.jsonl").exists() else []
        rows = [x for x in rows if x.get("phase") == "grpo"]
        r["ok"] = rc == 0 and len(rows) == 1
        if rows:
            r.update({k: rows[0].get(k) for k in ("step_s", "rollout_s", "learner_s", "sync_s", "sync_bytes", "episodes", "reward_mean")})
    else:
        r["report"] = last_json((out / f"{name}.out").read_text())
        r["ok"] = r["ok"] and r["report"] is not None
    if not r["ok"]:
        r["stdout_tail"], r["stderr_tail"] = ((out / f"{name}.{s}").read_text().splitlines()[-5:] for s in ("out", "err"))
    return r


parts = {name: result(name) for name in ("gpu_tests", "weight_sync", "vllm", "grpo_step")}
commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
summary = {
    "ok": all(p["ok"] for p in parts.values()),
    "device": torch.cuda.get_device_name(0), "gpus": torch.cuda.device_count(), "commit": commit,
    "seconds": int(time.time()) - start, "logs": str(out), "parts": parts,
}
print(json.dumps(summary))
sys.exit(0 if summary["ok"] else 1)
PYTHON
