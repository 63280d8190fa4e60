"""The `darkroom` command: serve the API, run a worker, run both embedded, migrate, build models."""

from __future__ import annotations

import argparse
import os
import sys

from darkroom.logs import configure_logging
from darkroom.processes import EXIT_CANNOT_START
from darkroom.settings import Settings, get_settings


def cmd_migrate(settings: Settings, _args: argparse.Namespace) -> None:
    from storage.db import upgrade_schema

    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade_schema(settings.resolved_database_url)


def _api_server(settings: Settings, args: argparse.Namespace, *, log_level: str):
    import uvicorn

    from api.app import create_app

    # log_config=None: uvicorn's lines go through the root handler, not a format of its own; the
    # request middleware logs each request with its id, so uvicorn's access line is not needed.
    # h11, not httptools: only h11 bounds what it buffers of a request's line and headers, so a
    # client cannot make the API hold megabytes of headers (past the bound: a 400, connection closed).
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        log_level=log_level,
        log_config=None,
        access_log=False,
        http="h11",
        h11_max_incomplete_event_size=settings.max_header_bytes,
    )
    return uvicorn.Server(config)


def cmd_api(settings: Settings, args: argparse.Namespace) -> None:
    _api_server(settings, args, log_level="warning").run()


def cmd_worker(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.spec.parallel_plan import ParallelConfigError
    from worker.main import run_worker

    # The group options become settings through the environment, which the rank processes the
    # worker spawns inherit: every rank reads the same settings.
    options = {
        "DARKROOM_DEVICES": args.devices,
        "DARKROOM_CFG_DEGREE": args.cfg,
        "DARKROOM_ULYSSES_DEGREE": args.ulysses,
        "DARKROOM_RING_DEGREE": args.ring,
    }
    if any(value is not None for value in options.values()):
        os.environ.update({name: str(value) for name, value in options.items() if value is not None})
        settings = get_settings()
    try:
        run_worker(settings, loglevel=args.log_level)
    except ParallelConfigError as error:
        print(f"darkroom worker: {error}", file=sys.stderr)
        sys.exit(EXIT_CANNOT_START)


def cmd_sweeper(settings: Settings, _args: argparse.Namespace) -> None:
    from worker.sweeper import run_sweeper

    run_sweeper(settings)


def cmd_webhook_worker(settings: Settings, args: argparse.Namespace) -> None:
    from worker.webhook_worker import run_webhook_worker

    run_webhook_worker(settings, loglevel=args.log_level)


def cmd_flower(settings: Settings, args: argparse.Namespace) -> None:
    from worker.flower import run_flower

    run_flower(settings, log_level=args.log_level)


def cmd_build_tiny(settings: Settings, args: argparse.Namespace) -> None:
    from pipelines.loader import resolve_model_path
    from pipelines.spec.registry import TINY_MODELS, get_model

    for name in args.names or TINY_MODELS:
        print(resolve_model_path(get_model(name), settings.resolved_models_dir))


def cmd_run(settings: Settings, args: argparse.Namespace) -> None:
    """Embedded mode: migrate, then the API, a worker, a webhook worker and the sweeper, stopped
    together (darkroom/embedded.py)."""
    from darkroom.embedded import run_embedded

    cmd_migrate(settings, args)
    server = _api_server(settings, args, log_level="info")
    sys.exit(run_embedded(settings, server, log_level=args.log_level))


def cmd_bench_timings(settings: Settings, args: argparse.Namespace) -> None:
    from datetime import timedelta

    from darkroom.timings_report import stage_report
    from storage.db import make_engine, make_session_factory

    with make_session_factory(make_engine(settings.resolved_database_url))() as session:
        print(stage_report(session, since=timedelta(hours=args.hours), model=args.model))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="darkroom", description=__doc__)
    parser.add_argument("--log-level", default=os.environ.get("DARKROOM_LOG_LEVEL", "INFO"))
    commands = parser.add_subparsers(dest="command", required=True)

    for name, func, help_text in (
        ("run", cmd_run, "migrate, then serve the API and one worker (embedded default)"),
        ("api", cmd_api, "serve the HTTP API"),
    ):
        sub = commands.add_parser(name, help=help_text)
        sub.add_argument("--host", default="127.0.0.1")
        sub.add_argument("--port", type=int, default=8000)
        sub.set_defaults(func=func)
    worker = commands.add_parser("worker", help="run a GPU worker for the models in DARKROOM_MODELS")
    worker.add_argument("--devices", help="one rank per device: GPU indices (0,1,2,3) or names (cpu,cpu)")
    worker.add_argument("--ulysses", type=int, help="Ulysses degree of the group's context parallelism")
    worker.add_argument("--ring", type=int, help="Ring degree (GPU only); cfg x ulysses x ring = number of devices")
    worker.add_argument("--cfg", type=int, help="2: a guided step's two passes run on two ranks at once")
    worker.set_defaults(func=cmd_worker)
    commands.add_parser(
        "sweeper", help="publish what the broker missed, requeue jobs whose worker vanished, dispatch webhooks"
    ).set_defaults(func=cmd_sweeper)
    commands.add_parser("webhook-worker", help="deliver signed webhook events, retrying per the database").set_defaults(
        func=cmd_webhook_worker
    )
    commands.add_parser(
        "flower", help="serve Flower on DARKROOM_FLOWER_ADDRESS:DARKROOM_FLOWER_PORT for this deployment's broker"
    ).set_defaults(func=cmd_flower)
    commands.add_parser("migrate", help="upgrade the database schema to head").set_defaults(func=cmd_migrate)
    build = commands.add_parser("build-tiny-models", help="create the tiny offline models in the models dir")
    build.add_argument("names", nargs="*")
    build.set_defaults(func=cmd_build_tiny)
    bench = commands.add_parser("bench", help="performance reports (the benchmarks themselves: make bench)")
    reports = bench.add_subparsers(dest="report", required=True)
    timings = reports.add_parser("timings", help="per-stage timings of the completed jobs, per model: p50, p95, max")
    timings.add_argument("--hours", type=float, default=24.0, help="jobs completed in the last N hours")
    timings.add_argument("--model", help="one model only")
    timings.set_defaults(func=cmd_bench_timings)

    args = parser.parse_args(argv)
    settings = get_settings()
    configure_logging(args.log_level, settings.log_format)
    args.func(settings, args)


if __name__ == "__main__":
    main()
