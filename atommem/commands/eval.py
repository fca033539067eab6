"""`atommem eval --config C --checkpoint PATH --data DIR [--policies atommem,rag,...] [--out DIR]`."""

from __future__ import annotations

import argparse
import json

from atommem.baselines import BASELINES
from atommem.commands.options import add_config_options, config_of


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="atommem eval", description="evaluate policies and baselines on a dataset")
    add_config_options(p)
    p.add_argument("--checkpoint", default=None, help="HF model dir of the policy (needed by model-driven policies)")
    p.add_argument("--data", default=None, help="dataset dir/file (default: data.dev of the config)")
    p.add_argument("--policies", default=None,
                   help="comma-separated: " + ",".join(["atommem", "oracle", *BASELINES]))
    p.add_argument("--out", default=None, help="report dir (default: eval.out or <run_dir>/eval)")
    args = p.parse_args(argv)
    cfg = config_of(args)
    data = args.data or cfg.data.dev
    if data is None:
        from atommem.errors import UserError

        raise UserError("no data to evaluate: pass --data DIR or set data.dev in the config")
    policies = [s.strip() for s in args.policies.split(",") if s.strip()] if args.policies else list(cfg.eval.policies)
    from atommem.eval.evaluate import evaluate

    report = evaluate(cfg, args.checkpoint, data, policies, out_dir=args.out)
    summary = {name: {k: s[k] for k in ("episodes", "questions", "em", "f1", "mean_turns")} for name, s in report["policies"].items()}
    print(json.dumps({"out": report["out"], "policies": summary, "comparisons": report["comparisons"]}, indent=1))
    return 0
