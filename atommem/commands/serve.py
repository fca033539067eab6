"""`atommem serve --checkpoint PATH [--config C] [--host H] [--port P] [--set k=v]`: Ray Serve, blocking
until SIGTERM/SIGINT, which let the requests in flight finish before it exits 0."""

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
    from atommem.stopping import wait_for_stop

    init_ray(cfg.cluster)
    serve.start(http_options={"host": host, "port": port})
    serve.run(build_app(cfg, checkpoint), name="atommem", route_prefix="/", blocking=False)
    print(f"serving {checkpoint} at http://{host}:{port}/ (POST /v1/answer, GET /healthz, /docs); Ctrl-C stops",
          flush=True)
    wait_for_stop()
    # Deleting the app first lets its replicas finish the requests they hold while the HTTP proxy still
    # answers (Serve's graceful shutdown); shutting Serve down at once would drop those connections.
    serve.delete("atommem")
    serve.shutdown()
    print("serve: stopped after the requests in flight", flush=True)
    return 0
