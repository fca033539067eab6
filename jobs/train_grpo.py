"""Ray job: GRPO training (rollouts on Ray, DeepSpeed learner group, weight sync to the engines).

    python jobs/train_grpo.py --config configs/X.yaml [--set key=value ...] [--resume]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/train_grpo.py --config configs/X.yaml
"""

import sys

from atommem.commands import run_job

if __name__ == "__main__":
    sys.exit(run_job("train_grpo", sys.argv[1:]))
