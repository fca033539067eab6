"""Ray job: serve a trained agent over HTTP with Ray Serve (plus the options of `atommem serve`).

    python jobs/serve.py --config configs/X.yaml [--set key=value ...]
    ray job submit --address http://HEAD:8265 --working-dir . -- python jobs/serve.py --config configs/X.yaml
"""

import sys

from atommem.commands import run_job

if __name__ == "__main__":
    sys.exit(run_job("serve", sys.argv[1:]))
