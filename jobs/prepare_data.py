"""Ray job: synthesise the missing data splits a config names (real sets built by `atommem data build` are kept).

    python jobs/prepare_data.py --config configs/X.yaml [--set key=value ...]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/prepare_data.py --config configs/X.yaml
"""

import sys

from atommem.commands import run_job

if __name__ == "__main__":
    sys.exit(run_job("prepare_data", sys.argv[1:]))
