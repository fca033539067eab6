"""Ray job: play episodes on Ray and write trajectories (plus the options of `atommem rollout`).

    python jobs/rollout.py --config configs/X.yaml [--set key=value ...] [--policy oracle] [--num-samples N]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/rollout.py --config configs/X.yaml
"""

import sys

from atommem.commands import run_job

if __name__ == "__main__":
    sys.exit(run_job("rollout", sys.argv[1:]))
