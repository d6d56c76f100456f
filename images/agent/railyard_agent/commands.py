"""The command line: `run` and `once` for the service, `status`, `check-now` and `rollback` for
railyard-update (in the spirit of update_engine_client)."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from .agent import Agent
from .config import AgentPaths, parse_key_values


def agent_pid(paths: AgentPaths) -> int | None:
    try:
        pid = int(paths.pid_file.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


def wait_for_cycle(paths: AgentPaths, since: float, timeout: float) -> dict[str, str] | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError):
            values = parse_key_values(paths.status_file.read_text())
            try:
                start = float(values.get("LAST_CYCLE_START") or 0)
                end = float(values.get("LAST_CYCLE_END") or 0)
            except ValueError:
                start = end = 0.0
            if start >= since and end >= start:
                return values
        time.sleep(0.5)
    return None


def cmd_status(paths: AgentPaths) -> int:
    try:
        sys.stdout.write(paths.status_file.read_text())
    except OSError:
        print(
            f"railyard-update: no status at {paths.status_file}: is railyard-update-agent.service running?",
            file=sys.stderr,
        )
        return 1
    return 0


def cmd_check_now(paths: AgentPaths, wait: bool, timeout: float) -> int:
    pid = agent_pid(paths)
    if pid is None:
        print(
            "railyard-update: the update agent is not running (start railyard-update-agent.service)",
            file=sys.stderr,
        )
        return 1
    since = time.time()
    try:
        os.kill(pid, signal.SIGUSR1)
    except PermissionError:
        print("railyard-update: check-now needs root (run it with sudo)", file=sys.stderr)
        return 1
    if not wait:
        return 0
    values = wait_for_cycle(paths, since, timeout)
    if values is None:
        print(f"railyard-update: no update cycle finished within {timeout:.0f} s", file=sys.stderr)
        return 1
    sys.stdout.write("".join(f"{k}={v}\n" for k, v in values.items()))
    return 1 if values.get("LAST_ERROR") else 0


def cmd_rollback(paths: AgentPaths) -> int:
    """Boot the other slot from the next boot on; scheduled checks then leave the version left behind
    alone (a check-now installs it again)."""
    result = subprocess.run([*paths.slot_tool, "rollback"], check=False)
    if result.returncode == 0:
        agent = Agent(paths)
        state = agent.load_state()
        version = agent.identity().version
        if version not in state.setdefault("skip_versions", []):
            state["skip_versions"].append(version)
        try:
            agent.save_state(state)
        except OSError as exc:
            print(
                f"railyard-update: cannot record the rollback in {paths.state_file}: {exc}", file=sys.stderr
            )
    return result.returncode


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="railyard-update", description="Railyard OS update agent and client."
    )
    parser.add_argument("--state-dir", type=Path, default=AgentPaths.state_dir)
    parser.add_argument("--run-dir", type=Path, default=AgentPaths.run_dir)
    parser.add_argument("--config", type=Path, action="append", help="config file (repeat; later ones win)")
    parser.add_argument("--slot-tool", default=None, help="the slot tool command (default railyard-slot)")
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("run", help="run the agent (the service does this)")
    once = commands.add_parser("once", help="run one update cycle in the foreground")
    once.add_argument(
        "--scheduled", action="store_true", help="behave as a scheduled, not a requested, check"
    )
    commands.add_parser("status", help="print the agent's status (key=value)")
    check = commands.add_parser("check-now", help="ask the running agent to check for an update at once")
    check.add_argument("--wait", action="store_true", help="wait for the cycle to end and print the status")
    check.add_argument("--timeout", type=float, default=1800.0)
    commands.add_parser("rollback", help="make the other slot the default from the next boot on")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s", stream=sys.stderr)
    base = AgentPaths()
    paths = AgentPaths(
        config_files=tuple(args.config) if args.config else base.config_files,
        state_dir=args.state_dir,
        run_dir=args.run_dir,
        slot_tool=tuple(args.slot_tool.split()) if args.slot_tool else base.slot_tool,
    )
    if args.command == "run":
        return Agent(paths).run()
    if args.command == "once":
        outcome = Agent(paths).check(interactive=not args.scheduled)
        print(outcome)
        return 0 if outcome in ("noupdate", "updated", "need-reboot", "disabled", "waiting") else 1
    if args.command == "status":
        return cmd_status(paths)
    if args.command == "check-now":
        return cmd_check_now(paths, args.wait, args.timeout)
    if args.command == "rollback":
        return cmd_rollback(paths)
    parser.error(f"unknown command {args.command}")
    return 2
