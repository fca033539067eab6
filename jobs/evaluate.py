"""Ray job: evaluate a checkpoint and the baselines on a dataset (the options of `atommem eval`).

    python jobs/evaluate.py --config configs/X.yaml [--set key=value ...] --checkpoint DIR [--data DIR] [--policies a,b] [--out DIR]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/evaluate.py --config configs/X.yaml
"""

import sys

from atommem.commands import run_job

if __name__ == "__main__":
    sys.exit(run_job("evaluate", sys.argv[1:]))
