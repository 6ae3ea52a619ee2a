"""skfleet's day-2 tasks, for the local Compose stack or, with -i, the hosts of an Ansible inventory.

`skfleet-ops` (the console script of the `ops` extra), `python -m skfleet_ops` or scripts/ops.sh
(which builds .venv first) run them, on the checkout named by SKFLEET_ROOT or found from here.

    scripts/ops.sh [-i INVENTORY] status [--json] [--wait SECONDS]
    scripts/ops.sh [-i INVENTORY] logs [--output DIR]
    scripts/ops.sh [-i INVENTORY] restart-worker NAME
    scripts/ops.sh [-i INVENTORY] retire-worker NAME
    scripts/ops.sh scale N
    scripts/ops.sh [-i INVENTORY] tunnel [--local-port PORT] [--tracking-port PORT]
    scripts/ops.sh [-i INVENTORY] train [-- TRAINER ARGUMENTS]

NAME is a worker's container (`skfleet-worker-2`) or number (`2`) locally, its inventory host on VMs.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

try:
    from skfleet_ops import tasks
    from skfleet_ops.fleet import Fleet
    from skfleet_ops.local import Local
    from skfleet_ops.target import OpsError
except ModuleNotFoundError as missing:  # a client install, without the ops extra
    sys.exit(
        f"error: skfleet-ops needs {missing.name}, which this install lacks: "
        "pip install -r ansible/requirements.txt (the controller's pins), or pip install '.[ops]'"
    )


def parser() -> argparse.ArgumentParser:
    cli = argparse.ArgumentParser(
        prog="skfleet-ops",
        description="Day-2 tasks for a skfleet cluster: the local Compose stack, or the hosts of an Ansible inventory.",
        epilog="Runbooks: docs/runbooks/README.md",
    )
    cli.add_argument(
        "-i",
        "--inventory",
        type=Path,
        default=os.environ.get("SKFLEET_INVENTORY") or None,
        help="Ansible inventory of the VMs (default: $SKFLEET_INVENTORY; none: the local Compose stack)",
    )
    commands = cli.add_subparsers(dest="task", required=True, metavar="TASK")

    status = commands.add_parser("status", help="health, workers, memory, tasks, versions; exit 0 healthy, 1 not, 4 mismatch")
    status.add_argument("--json", action="store_true", help="print the whole state as JSON")
    status.add_argument("--wait", type=float, default=0, metavar="SECONDS", help="poll until healthy, for up to SECONDS")
    status.set_defaults(run=lambda target, args: tasks.status(target, as_json=args.json, wait=args.wait))

    logs = commands.add_parser("logs", help="every skfleet container's log, from every host, in one .tar.gz")
    logs.add_argument("--output", type=Path, default=Path(), metavar="DIR", help="where the archive goes (default: here)")
    logs.set_defaults(run=lambda target, args: tasks.logs(target, args.output))

    for name, verb, act in (
        ("restart-worker", "retire gracefully, then start again", tasks.restart_worker),
        ("retire-worker", "retire gracefully, remove", tasks.retire_worker),
    ):
        task = commands.add_parser(name, help=f"{verb}: its data moves to the other workers first")
        task.add_argument("name", metavar="NAME", help="container name or number (local), inventory host (VMs)")
        task.add_argument("--timeout", type=float, default=300, metavar="SECONDS")
        task.set_defaults(run=lambda target, args, act=act: act(target, args.name, args.timeout))

    scale = commands.add_parser("scale", help="run N worker containers on the local stack (extra ones retire gracefully)")
    scale.add_argument("workers", type=int, metavar="N")
    scale.add_argument("--timeout", type=float, default=300, metavar="SECONDS")
    scale.set_defaults(run=lambda target, args: tasks.scale(target, args.workers, args.timeout))

    tunnel = commands.add_parser(
        "tunnel", help="the scheduler's dashboard, and the MLflow tracking server's UI, on 127.0.0.1 through SSH; Ctrl-C ends it"
    )
    tunnel.add_argument("--local-port", type=int, default=8787, metavar="PORT", help="local port (default 8787)")
    tunnel.add_argument(
        "--tracking-port",
        type=int,
        metavar="PORT",
        help="local port of the tracking server's UI (default its own, 8789 on VMs: the runs' links point there)",
    )
    tunnel.add_argument("--for", dest="duration", type=float, metavar="SECONDS", help="close after SECONDS")
    tunnel.set_defaults(run=lambda target, args: tasks.tunnel(target, args.local_port, args.duration, args.tracking_port))

    train = commands.add_parser("train", help="run the trainer on the cluster, streaming its progress (VMs: fetch the run)")
    train.add_argument("--fetch-dir", type=Path, metavar="DIR", help="VMs: where run folders land (default: trainer_fetch_dir)")
    train.add_argument("trainer_args", nargs=argparse.REMAINDER, metavar="-- ARGS", help="python -m skfleet arguments")
    train.set_defaults(run=lambda target, args: target.train(_after_dashes(args.trainer_args), args.fetch_dir))
    return cli


def _after_dashes(arguments: list[str]) -> list[str]:
    return arguments[1:] if arguments[:1] == ["--"] else arguments


def run(args: argparse.Namespace) -> int:
    """Run the task the arguments name (each parser sets its own `run`) on its target; give the exit code."""
    target = Fleet(args.inventory) if args.inventory else Local()
    try:
        return args.run(target, args)
    finally:
        target.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.inventory and not args.inventory.exists():
        print(f"error: inventory {args.inventory} does not exist", file=sys.stderr)
        return 2
    try:
        return run(args)
    except OpsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
