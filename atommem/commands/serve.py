"""`atommem serve --checkpoint PATH [--config C] [--host H] [--port P] [--set k=v]`: Ray Serve, blocking."""

from __future__ import annotations

import argparse

from atommem.commands.options import add_config_options, config_of


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="atommem serve", description="serve a trained agent over HTTP with Ray Serve")
    add_config_options(p, uses="serve, env, engine")
    p.add_argument("--checkpoint", default=None, help="HF model dir of the agent (default model.path)")
    p.add_argument("--host", default=None, help="bind address (default serve.host)")
    p.add_argument("--port", type=int, default=None, help="HTTP port (default serve.port)")
    args = p.parse_args(argv)
    cfg = config_of(args)
    checkpoint = args.checkpoint or cfg.model.path
    if checkpoint is None:
        from atommem.errors import UserError

        raise UserError("atommem serve needs a model: pass --checkpoint PATH or set model.path in the config")
    host = args.host or cfg.serve.host
    port = args.port if args.port is not None else cfg.serve.port

    from ray import serve

    from atommem.runtime import init_ray
    from atommem.serve.app import build_app

    init_ray(cfg.cluster)
    serve.start(http_options={"host": host, "port": port})
    print(f"serving {checkpoint} at http://{host}:{port}/ (POST /v1/answer, GET /healthz, /docs); Ctrl-C stops")
    serve.run(build_app(cfg, checkpoint), name="atommem", route_prefix="/", blocking=True)
    return 0
