"""Ray job: play episodes on Ray and write trajectories (plus the options of `atommem rollout`).

    python jobs/rollout.py --config configs/X.yaml [--set key=value ...] [--policy oracle] [--num-samples N]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/rollout.py --config configs/X.yaml
"""

import sys

from atommem.jobs_common import main

if __name__ == "__main__":
    sys.exit(main("rollout"))
