"""The `sweep` command: the only code that parses arguments, prints or exits.

Every user error (SweepError, StorageError) becomes one line on stderr and exit code 2. The
floors below are imported by the commands that need them, so `sweep --help`, `sweep best` and
`sweep models` never start TensorFlow; the CLI is also where the floors' dependencies are built
and passed in (the Keras trainer, the dashboard publisher).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from typing import Any, NoReturn

from sweep import settings
from sweep.cli.text import say
from sweep.errors import ConfigError, SweepError

DEFAULT_CAMPAIGN = "arith"  # sweep.search.config.DEFAULT_CAMPAIGN (checked in the tests)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130


class _Parser(argparse.ArgumentParser):
    """argparse that reports a bad flag in one line instead of usage + error."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


# Echoed values are cut: a 50 MB argument must not come back as a 50 MB error line.
def _shown(text: str) -> str:
    return repr(text if len(text) <= 40 else text[:37] + "...")


def _int_in(minimum: int, maximum: int) -> Any:
    def parse(text: str) -> int:
        try:
            value = int(text) if len(text) <= 40 else None
        except ValueError:
            value = None
        if value is None:
            raise argparse.ArgumentTypeError(f"{_shown(text)} is not an integer")
        if not minimum <= value <= maximum:
            raise argparse.ArgumentTypeError(
                f"{_shown(text)} is out of range; allowed {minimum} to {maximum}"
            )
        return value

    return parse


# Local worker processes on one machine: each holds a TensorFlow runtime (~0.8 GiB) and two
# database connections, so more than this is a typo, not a plan (workers on other hosts are
# started there with `sweep worker`).
MAX_LOCAL_WORKERS = 64
MAX_TRIALS = 10**7
MAX_SEED = 2**32 - 1
MAX_VERSION = 2**31 - 1


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"{_shown(text)} must be a positive number of seconds")
    return value


def _number(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{_shown(text)} is not a finite number")
    return value


def build_parser() -> argparse.ArgumentParser:
    from sweep._version import __version__

    parser = _Parser(
        prog="sweep",
        description="Find small Keras networks that compute arithmetic, by hyperparameter search.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--storage",
            help="database URL (default: $SWEEP_STORAGE, else sqlite:///sweeps.db)",
        )
        p.add_argument(
            "--campaign", default=None,
            help=f"campaign name (default: $SWEEP_CAMPAIGN, else {DEFAULT_CAMPAIGN})",
        )

    run = commands.add_parser("run", help="run (or resume) a sweep")
    common(run)
    run.add_argument("--ops", help="comma-separated operations, or 'all' (default: all)")
    run.add_argument(
        "--trials", type=_int_in(1, MAX_TRIALS), help="counted trials per operation"
    )
    run.add_argument("--timeout", type=_positive_float, help="wall-clock seconds per operation")
    run.add_argument("--config", help="campaign TOML file")
    run.add_argument("--seed", type=_int_in(0, MAX_SEED), help="seed for data and sampler")
    run.add_argument(
        "--expr", action="append", default=[], metavar="NAME=EXPRESSION",
        help="user-defined operation over a and b, e.g. --expr 'cube=a*a*a' (repeatable)",
    )
    run.add_argument("--sampler", help="auto, tpe, random, cmaes, gp or nsga2")
    run.add_argument("--pruner", help="median, hyperband or none")
    run.add_argument(
        "--workers", type=_int_in(1, MAX_LOCAL_WORKERS), default=1,
        help=f"local worker processes sharing this machine's cores (default 1, at most "
        f"{MAX_LOCAL_WORKERS})",
    )

    worker = commands.add_parser(
        "worker", help="join a campaign from any host; work until every budget is met"
    )
    common(worker)
    worker.add_argument(
        "--config", help="campaign TOML file, used to create the campaign if it does not exist"
    )
    worker.add_argument("--quiet", action="store_true", help="print warnings only")

    def output_format(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--format", choices=("text", "json"), default="text",
            help="text (default) or json on stdout",
        )

    best = commands.add_parser("best", help="best model per operation (from the registry)")
    common(best)
    output_format(best)
    best.add_argument("--json", action="store_true", help="print a JSON array (= --format json)")

    pull = commands.add_parser(
        "pull", help="write an operation's model as .keras, a TF SavedModel or ONNX"
    )
    common(pull)
    pull.add_argument("operation")
    pull.add_argument(
        "--format", choices=("keras", "savedmodel", "onnx"), default="keras",
        help="keras (default), savedmodel (a folder for TF Serving) or onnx",
    )
    pull.add_argument(
        "-o", "--output", help="output path (default: OP.keras, OP.onnx, or the folder OP)"
    )
    pull.add_argument(
        "--version", type=_int_in(1, MAX_VERSION), help="registry version (default: best)"
    )
    pull.add_argument("--force", action="store_true", help="overwrite an existing output")

    predict = commands.add_parser("predict", help="run the best model on raw inputs")
    common(predict)
    predict.add_argument("operation")
    predict.add_argument("a", type=_number, nargs="?")
    predict.add_argument("b", type=_number, nargs="?")
    predict.add_argument(
        "--input", metavar="FILE", help="many inputs: CSV, one pair per line ('-': stdin)"
    )
    output_format(predict)

    models = commands.add_parser("models", help="registry history: versions, metrics, sizes")
    common(models)
    models.add_argument("operation", nargs="?")
    output_format(models)

    serve = commands.add_parser(
        "serve", help="answer over HTTP (TF Serving's REST API) with the best models"
    )
    common(serve)
    serve.add_argument(
        "operations", nargs="*", metavar="OP",
        help="operations to serve (default: every operation with a model)",
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    serve.add_argument("--port", type=_port, default=8500, help="port (default: %(default)s)")
    serve.add_argument(
        "--backend", choices=("auto", "onnxruntime", "tensorflow"), default="auto",
        help="onnxruntime (needs the onnx extra; the fast one), tensorflow, or auto (default)",
    )
    serve.add_argument(
        "--poll", type=_positive_float, default=2.0, metavar="SECONDS",
        help="how often to look for a newly promoted model (default: %(default)s)",
    )

    dashboard = commands.add_parser("dashboard", help="browse the studies in optuna-dashboard")
    dashboard.add_argument(
        "--storage", help="database URL (default: $SWEEP_STORAGE, else sqlite:///sweeps.db)"
    )
    dashboard.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: %(default)s)"
    )
    dashboard.add_argument("--port", type=_port, default=8080, help="port (default: %(default)s)")
    dashboard.add_argument(
        "--allow-remote", action="store_true",
        help="allow a --host beyond loopback (anyone who reaches it sees every study); the "
        "dashboard is then read-only unless --writable is given too",
    )
    dashboard.add_argument(
        "--read-only", action="store_true",
        help="refuse every request that would change the database (notes, deletions, ...)",
    )
    dashboard.add_argument(
        "--writable", action="store_true",
        help="with --allow-remote: keep optuna-dashboard's writes (deleting studies, ...)",
    )
    dashboard.add_argument(
        "--artifacts", metavar="DIR",
        help="artifact folder (default: $SWEEP_ARTIFACTS, else ./sweep-artifacts if it exists)",
    )
    dashboard.set_defaults(campaign=None)  # Shows every study; main() still reads the attribute.

    report = commands.add_parser("report", help="write a self-contained HTML report")
    common(report)
    report.add_argument(
        "-o", "--output", default="report.html", help="HTML file to write (default: %(default)s)"
    )
    report.add_argument("--force", action="store_true", help="overwrite an existing file")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """The `sweep` command; returns its exit code (0, 2 for a user error, 130 when stopped)."""
    try:
        return _main(argv)
    except BaseException as error:
        if not _is_interruption(error):
            raise
        # Ctrl-C at any moment (argument parsing, a TensorFlow import, a trial) ends here.
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt this
        if not os.environ.get("SWEEP_PARENT_PID"):
            # (A worker of `run --workers K` stays quiet: its parent says this once.)
            say(
                "sweep: interrupted; finished trials and promoted models are kept. "
                "Run the same command to resume.",
                err=True,
            )
        return EXIT_INTERRUPTED


def _is_interruption(error: BaseException) -> bool:
    """A KeyboardInterrupt, also one Python wrapped on its way up.

    Ctrl-C inside a class body being created surfaces as "RuntimeError: Error calling
    __set_name__" (seen once in 140 Ctrl-Cs at 0.6-2 s, during an import), with the
    interrupt as its cause.
    """
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, KeyboardInterrupt):
            return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def _main(argv: Sequence[str] | None) -> int:
    if not sys.warnoptions:
        # Library warnings (matplotlib, NumPy, zipfile, Keras) are for developers; a user sees
        # one line per problem from the sweep itself. `python -W ...` still shows them.
        warnings.simplefilter("ignore")
    args = build_parser().parse_args(argv)
    from storage import StorageError

    try:
        environment = settings.refresh()
        from storage import resolve_storage_url
        from sweep.search.config import validate_campaign_name

        # An explicit `--campaign ''` is refused, not silently read as the default campaign.
        campaign = validate_campaign_name(
            args.campaign
            if args.campaign is not None
            else environment.campaign or DEFAULT_CAMPAIGN
        )
        url = resolve_storage_url(args.storage, environment.storage)
        handler = {
            "run": _cmd_run,
            "worker": _cmd_worker,
            "best": _cmd_best,
            "pull": _cmd_pull,
            "predict": _cmd_predict,
            "models": _cmd_models,
            "serve": _cmd_serve,
            "dashboard": _cmd_dashboard,
            "report": _cmd_report,
        }[args.command]
        return handler(args, url, campaign)
    except (SweepError, StorageError) as e:
        say(f"sweep: error: {_one_line(e)}", err=True)
        return EXIT_USAGE
    except BrokenPipeError:
        # `sweep predict --input big.csv | head`: the reader left; that is not an error.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
        return 0


def _one_line(error: BaseException) -> str:
    """An error as one line of at most 1000 characters (messages quote user values)."""
    text = " ".join(str(error).split()) or type(error).__name__
    return text if len(text) <= 1000 else text[:997] + "..."


def _build_config(args: argparse.Namespace, campaign: str) -> Any:
    from dataclasses import replace

    from sweep.problem.operations import parse_expr_flag
    from sweep.search.config import CampaignConfig, config_from_toml, load_toml, with_seed

    config = CampaignConfig()
    if args.config:
        config = config_from_toml(load_toml(args.config), config)
    updates: dict[str, Any] = {}
    if args.campaign or settings.current().campaign:
        updates["name"] = campaign  # flag > environment > config file > default
    if args.ops:
        ops = tuple(part.strip() for part in args.ops.split(",") if part.strip())
        if not ops:
            raise ConfigError(f"--ops {args.ops!r} names no operation")
        updates["operations"] = ops
    if args.expr:
        expressions = dict(config.expressions)
        for text in args.expr:
            name, expression = parse_expr_flag(text)
            expressions[name] = expression
        updates["expressions"] = expressions
        if not args.ops and not (args.config and "operations" in load_toml(args.config).get(
            "campaign", {}
        )):
            # `--expr` alone sweeps just the expressions, not all six built-ins as well.
            updates["operations"] = tuple(expressions)
    if args.trials is not None:
        updates["trials"] = args.trials
    if args.timeout is not None:
        updates["timeout"] = args.timeout
    if args.sampler:
        updates["sampler"] = args.sampler
    if args.pruner:
        updates["pruner"] = args.pruner
    config = replace(config, **updates)
    if args.seed is not None:
        config = with_seed(config, args.seed)
    config.validate()
    return config


def _training_runtime(workers: int) -> Any:
    """TensorFlow's threads for one of `workers` workers here, and the trainer to pass in."""
    from sweep.nets._runtime import configure_tensorflow
    from sweep.search.workers import threads_per_worker

    configure_tensorflow(threads_per_worker(workers))
    from sweep.nets.training import KerasTrainer

    return KerasTrainer()


def _publisher() -> Any:
    from sweep.publishing.notes import default_artifact_dir, publisher

    # Shared with the dashboard (`sweep dashboard --artifacts`, the compose volume).
    return publisher(default_artifact_dir())


def _background_trainer(workers: int, *, start: bool) -> Any:
    """TensorFlow imported in a thread while the campaign opens (or, unstarted, on first use)."""
    from sweep.nets.background import BackgroundTrainer
    from sweep.search.workers import threads_per_worker

    return BackgroundTrainer(threads_per_worker(workers), start=start)


def _leave_background_import(trainer: Any) -> None:
    """Before an error message: wait for the import (it silences stderr), unless stopped.

    After a stop signal, joining could hang (`BackgroundTrainer.abandon`); the process leaves
    with `os._exit` instead (`sweep.cli.run`), and the import's thread dies with it.
    """
    from sweep.search.workers import interrupting_signal

    # (Before our handlers are installed, Python's own raises KeyboardInterrupt unrecorded.)
    error = sys.exc_info()[1]
    if (error is not None and _is_interruption(error)) or interrupting_signal() is not None:
        trainer.abandon()
    else:
        trainer.wait()


def _cmd_run(args: argparse.Namespace, url: str, campaign: str) -> int:
    config = _build_config(args, campaign)
    # With K >= 2 workers this process only coordinates: its workers import TensorFlow, it
    # does not (the processes start sooner, and K imports do not queue behind a K+1-th).
    trainer = _background_trainer(args.workers, start=args.workers == 1)
    from sweep.search.workers import LocalWorkers, install_signal_handlers

    install_signal_handlers()
    # Started before Optuna loads here: their imports overlap the campaign's preparation.
    workers = LocalWorkers(url, config.name, args.workers) if args.workers > 1 else None
    try:
        from sweep.search.campaign import Campaign

        with Campaign(config, url, trainer, on_promoted=_publisher()) as prepared:
            if workers is not None:
                workers.release()
            # The import silences stderr while it runs: nothing may be printed before it ends.
            trainer.wait()
            return _run_prepared(args, url, config, prepared, workers)
    except BaseException:
        if workers is not None:
            workers.stop()
        _leave_background_import(trainer)
        raise


def _run_prepared(
    args: argparse.Namespace, url: str, config: Any, prepared: Any, workers: Any
) -> int:
    from storage import mask_url
    from sweep.search.workers import run_local_workers

    ops = ", ".join(op.name for op in prepared.operations)
    budget = []
    if config.trials is not None:
        budget.append(f"{config.trials} trials")
    if config.timeout is not None:
        budget.append(f"{config.timeout:g} s")
    say(
        f"campaign {config.name!r} on {mask_url(url)}: {ops}; budget per operation: "
        f"{' or '.join(budget)}; {args.workers} worker(s)",
        err=True,
    )
    from sweep.cli.display import ProgressReporter, print_best_table

    with ProgressReporter() as reporter:
        if workers is None:
            prepared.run(reporter)
        else:
            run_local_workers(prepared, workers, reporter)
    print_best_table(prepared.best(), prepared.operations)
    return 0


def _cmd_worker(args: argparse.Namespace, url: str, campaign: str) -> int:
    from sweep.search.workers import (
        exit_with_parent,
        install_signal_handlers,
        pin_to_assigned_core,
        workers_from_environment,
    )

    # Pinned first: TensorFlow's threads, started by the import, inherit the core. (NumPy has
    # loaded by now: the parent sized its OpenBLAS pool through the environment, placement.)
    pin_to_assigned_core()
    install_signal_handlers()
    exit_with_parent()
    fallback = None
    if args.config:
        args.ops = args.trials = args.timeout = args.seed = args.sampler = args.pruner = None
        args.expr = []
        fallback = _build_config(args, campaign)
    trainer = _background_trainer(workers_from_environment(), start=True)
    from sweep.cli.display import ProgressReporter, QuietReporter
    from sweep.search.campaign import Campaign
    from sweep.search.workers import wait_for_the_parent

    name = fallback.name if fallback is not None else campaign
    reporter = QuietReporter() if args.quiet else ProgressReporter(live=False)
    try:
        if not wait_for_the_parent():  # `run --workers K` could not prepare its campaign
            trainer.abandon()
            return 0
        with Campaign.join(url, name, trainer, fallback, on_promoted=_publisher()) as prepared:
            # The import silences stderr while it runs: nothing may be printed before it ends.
            trainer.wait()
            with reporter:
                entries = prepared.run(reporter)
    except BaseException:
        _leave_background_import(trainer)
        raise
    if not args.quiet:
        say(
            f"worker done: campaign {name!r}, {len(entries)} operation(s) with a model",
            err=True,
        )
    return 0


def _cmd_best(args: argparse.Namespace, url: str, campaign: str) -> int:
    from storage import mask_url
    from sweep.publishing.models import best_models
    from sweep.publishing.summary import json_rows

    entries = best_models(storage=url, campaign=campaign)
    if args.json or args.format == "json":
        print(json.dumps(json_rows(entries), indent=2, default=str))
        return 0
    if not entries:
        raise ConfigError(
            f"no models yet in campaign {campaign!r} on {mask_url(url)}; run `sweep run` first"
        )
    from sweep.cli.display import print_best_table

    print_best_table(entries, None)
    return 0


def _cmd_pull(args: argparse.Namespace, url: str, campaign: str) -> int:
    from sweep.nets.portable import ONNX_EXTRA, ONNX_MODULES, require_modules
    from sweep.publishing.models import check_operation_name

    check_operation_name(args.operation)
    if args.format == "onnx":  # before TensorFlow starts: a missing extra is a quick answer
        require_modules(ONNX_MODULES, "--format onnx", ONNX_EXTRA)
    # TensorFlow starts inside `pull`, after the output path and the registry entry are checked.
    from sweep.publishing.pulling import pull

    pulled = pull(
        args.operation, args.output, storage=url, campaign=campaign, version=args.version,
        force=args.force, format=args.format,
    )
    entry = pulled.entry
    checked = ""
    if pulled.comparison is not None:
        checked = f"; answers as the registry model: {pulled.comparison.describe()}"
    what = "folder" if pulled.format == "savedmodel" else "file"
    say(
        f"wrote {what} {pulled.path} ({pulled.size_bytes} bytes) from {entry.operation} version "
        f"{entry.version}, trial {entry.trial_number} (registry sha256 {entry.sha256[:12]}… "
        f"verified){checked}"
    )
    return 0


def _finite_or_none(values: Any) -> list[float | None]:
    """JSON has no NaN or infinity: a non-finite answer is written as null."""
    return [float(v) if math.isfinite(v) else None for v in values]


def _cmd_predict(args: argparse.Namespace, url: str, campaign: str) -> int:
    from sweep.publishing.models import check_operation_name

    check_operation_name(args.operation)
    if args.input is not None and args.a is not None:
        raise ConfigError("give inputs either as A [B] or with --input, not both")
    if args.input is None and args.a is None:
        raise ConfigError(f"give the inputs: sweep predict {args.operation} A [B], or --input FILE")
    # Every input is checked before TensorFlow starts (8 s): the same checks as predict_many's.
    from sweep.publishing.models import _registry, check_inputs, check_pairs, resolve_operation

    with _registry(url) as registry:
        op = resolve_operation(registry, campaign, args.operation)
    import numpy as np

    if args.input is not None:
        from sweep.cli.inputs import read_pairs

        rows, numbers = read_pairs(args.input, op.arity)
        x = np.asarray(rows, dtype=np.float64).reshape(len(rows), op.arity)
        check_pairs(op, x, what="line", numbers=numbers)
    else:
        x = np.asarray([check_inputs(op, args.a, args.b)], dtype=np.float64)
    _training_runtime(1)
    from sweep.publishing.models import predict_many

    result = predict_many(args.operation, x, storage=url, campaign=campaign)
    if args.format == "json":
        print(json.dumps({
            "operation": result.operation,
            "model_version": result.version,
            "integer_valued": result.integer_valued,
            "instances": result.inputs.tolist(),
            "predictions": _finite_or_none(result.outputs),
            "answers": _finite_or_none(result.answers),
            "exact": _finite_or_none(result.exact),
        }))
        return 0
    if args.input is not None:
        lines = [
            (f"{v + 0.0:.0f}" if result.integer_valued else repr(float(v))) if math.isfinite(v)
            else repr(float(v))
            for v in result.answers
        ]
        if lines:
            sys.stdout.write("\n".join(lines) + "\n")
        return 0
    one = result.row(0)
    inputs = ", ".join(f"{v:g}" for v in one.inputs)
    answer = f"{one.answer + 0.0:.0f}" if one.integer_valued else f"{one.answer:.9g}"
    say(
        f"{one.operation}({inputs}) = {answer}    "
        f"[network output {one.output:.9g}; exact {one.exact:.9g}; version {one.version}]"
    )
    return 0


def _cmd_models(args: argparse.Namespace, url: str, campaign: str) -> int:
    from storage import mask_url
    from sweep.publishing.models import model_history

    entries = model_history(args.operation, storage=url, campaign=campaign)
    if args.format == "json":
        from sweep.publishing.summary import history_json

        print(json.dumps(history_json(entries), indent=2, default=str))
        return 0
    if not entries:
        what = f"operation {args.operation!r}" if args.operation else f"campaign {campaign!r}"
        raise ConfigError(f"no models yet for {what} on {mask_url(url)}")
    from sweep.cli.display import print_history

    print_history(entries)
    return 0


def _cmd_serve(args: argparse.Namespace, url: str, campaign: str) -> int:
    import logging

    from storage import mask_url
    from sweep.nets.portable import require_modules
    from sweep.publishing.models import check_operation_name
    from sweep.publishing.serve import SERVE_EXTRA, SERVER_MODULES, ModelStore, choose_backend

    for name in args.operations:
        check_operation_name(name)
    require_modules(SERVER_MODULES, "sweep serve", SERVE_EXTRA)
    backend = choose_backend(args.backend)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("sweep serve: %(message)s"))
    logger = logging.getLogger("sweep.serve")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if backend == "tensorflow":
        say(
            "sweep serve: warning: onnxruntime is not installed, so the models run under "
            "TensorFlow in this process (about 8-13 ms per answer with 8 clients, not the 5 ms "
            f"target; {SERVE_EXTRA} installs what is missing)",
            err=True,
        )
        _training_runtime(1)
    store = ModelStore(
        url, campaign, args.operations or None, backend, poll_seconds=args.poll
    )
    from sweep.publishing.serve import serve

    def listening(address: str) -> None:
        names = ", ".join(args.operations) if args.operations else "every operation with a model"
        say(
            f"sweep serve: {names} of campaign {campaign!r} on {mask_url(url)} "
            f"({backend}); listening on {address}  (Ctrl-C to stop)",
            err=True,
        )

    import signal

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (docker stop) ends like Ctrl-C, after uvicorn's drain

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import contextlib

    with contextlib.suppress(KeyboardInterrupt):
        serve(store, host=args.host, port=args.port, on_listening=listening)
    say("sweep serve: stopped", err=True)
    return 0


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port number (0-65535; 0 picks one)")
    return value


def _cmd_dashboard(args: argparse.Namespace, url: str, campaign: str) -> int:
    import signal
    from pathlib import Path

    from storage import mask_url
    from sweep.publishing.dashboard import is_loopback, open_dashboard
    from sweep.publishing.notes import default_artifact_dir

    local = is_loopback(args.host)
    if not local and not args.allow_remote:
        raise ConfigError(
            f"--host {_shown(args.host)} is reachable from other machines, and "
            "optuna-dashboard lets anyone who reaches it read every study and delete them; "
            "pass --allow-remote to mean it (read-only unless --writable too), or bind "
            "127.0.0.1 and use an SSH tunnel"
        )
    if args.writable and not args.allow_remote:
        raise ConfigError("--writable goes with --allow-remote (a loopback dashboard is writable)")
    if args.writable and args.read_only:
        raise ConfigError("--read-only and --writable contradict each other; pick one")
    read_only = args.read_only or (not local and not args.writable)
    artifacts: Path | None = Path(args.artifacts) if args.artifacts else default_artifact_dir()
    if not args.artifacts and not (artifacts and artifacts.is_dir()):
        artifacts = None  # The default folder is optional; an explicit one must exist.
    server = open_dashboard(
        url, host=args.host, port=args.port, artifact_dir=artifacts, read_only=read_only
    )

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt  # SIGTERM (docker stop) ends like Ctrl-C, not mid-response.

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Even if started with it ignored.
    shown = f"; artifacts from {artifacts}" if artifacts else ""
    mode = "; read-only" if read_only else ""
    say(f"optuna-dashboard on {mask_url(url)}{shown}{mode}")
    if not local:
        say(
            f"warning: the dashboard is reachable from other machines on {args.host}"
            f"{' (read-only)' if read_only else ', and anyone who reaches it can change it'}",
            err=True,
        )
    say(f"open {server.url}  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        say("dashboard stopped", err=True)
    finally:
        server.close()
    return 0


def _cmd_report(args: argparse.Namespace, url: str, campaign: str) -> int:
    from sweep.publishing.report import build_report

    path = build_report(url, campaign, args.output, force=args.force)
    say(f"wrote {path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
