"""Ray job: a teacher plays episodes; trajectories with reward >= sft.min_reward become SFT data.

    python jobs/collect_sft.py --config configs/X.yaml [--set key=value ...]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/collect_sft.py --config configs/X.yaml
"""

import sys

from atommem.commands import run_job

if __name__ == "__main__":
    sys.exit(run_job("collect_sft", sys.argv[1:]))
