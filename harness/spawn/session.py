"""The one test `railyard spawn` runs (see harness.spawn): boot the machines, say how to reach them, hand the
first to a person or wait, and leave the teardown (or the release, with --keep) to the plugin."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys

from harness.errors import RailyardError
from harness.factory import MachineFactory
from harness.spawn import SETTINGS_ENV, SpawnSettings


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def test_spawn(machine_factory: MachineFactory) -> None:
    settings = SpawnSettings.from_env(os.environ[SETTINGS_ENV])
    ignition = None
    butane = None
    if settings.ignition:
        with open(settings.ignition) as f:
            ignition = json.load(f)
    if settings.butane:
        with open(settings.butane) as f:
            butane = f.read()
    try:
        machines = machine_factory.create(settings.count, ignition=ignition, butane=butane)
    except RailyardError as exc:  # the run's own report is off: say it here
        say(f"railyard spawn: {type(exc).__name__}: {exc}")
        raise
    key = machine_factory.run.keypair.private_path
    ssh_commands = []
    for m in machines:
        ep = m.vm.ssh_endpoint
        jump = ep.via.address.ssh_options() if ep.via is not None else []
        command = ["ssh", *jump, "-i", str(key), "-p", str(ep.port), "-o", "StrictHostKeyChecking=no",
                   "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", f"{ep.user}@{ep.host}"]  # fmt: skip
        ssh_commands.append(command)
        say(f"railyard spawn: {m.name} is up: {shlex.join(command)}")
        say(f"railyard spawn: {m.name} console: {m.vm.console_path}")
    if settings.keep:
        platform = machine_factory.run.platform
        for m in list(machines):
            m.close()
            platform.release(m.vm)
            machine_factory.machines.remove(m)
        root = machine_factory.run.output_dir.parent
        say(f"railyard spawn: kept {len(machines)} machine(s) running; to delete them once you are done: "
            f"railyard gc --platform {machine_factory.run.platform_name} --output-root {root}")  # fmt: skip
    if settings.ssh:
        extra = [settings.command] if settings.command else []
        status = subprocess.call([*ssh_commands[0], *extra])
        say(f"railyard spawn: the SSH session ended ({status})")
        return
    if settings.keep:
        return
    say("railyard spawn: Ctrl-C destroys the machine(s)")
    while True:
        signal.pause()
