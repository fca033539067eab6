"""Ray job: supervised fine-tuning of the policy on the teacher trajectories.

    python jobs/train_sft.py --config configs/X.yaml [--set key=value ...]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/train_sft.py --config configs/X.yaml
"""

import sys

from atommem.commands import run_job

if __name__ == "__main__":
    sys.exit(run_job("train_sft", sys.argv[1:]))
