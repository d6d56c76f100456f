"""Recovering a machine whose restart never reaches the firmware: a power cycle on the same disks."""

from __future__ import annotations

import dataclasses

from harness.machine import RESTART_LINE
from harness.retry import poll


def test_a_restart_stuck_before_the_firmware_is_power_cycled(machine):
    m = machine
    usual = m.timeouts
    m.timeouts = dataclasses.replace(usual, restart=10.0)
    m.succeed("echo kept | sudo tee /var/lib/railyard-cycle && sync")
    first_process = m.vm.process.pid

    # A stand-in for the stall: the kernel's restart line on the console, then a guest that never runs again.
    m.succeed(f"echo '<0>{RESTART_LINE}' | sudo tee /dev/kmsg")
    poll(
        lambda: m.console_text().rstrip().endswith(RESTART_LINE) or None,
        timeout=m.timeouts.command,
        what="the restart line on the console",
    )
    m.vm.qmp.execute("stop")

    m.wait_for_reboot()

    assert m.vm.process.pid != first_process
    [note] = m.notes
    assert "no firmware output" in note
    assert "power-cycled it" in note
    assert "run state paused" in note  # the hypervisor's view, taken before the power cycle
    assert len(m.boot_ids) == 2
    assert m.succeed("cat /var/lib/railyard-cycle") == "kept\n"  # same disks
    console = m.console_text()
    assert console.count("BdsDxe: starting") == 2, "the console lost the first boot in the power cycle"
    assert console.index(RESTART_LINE) < console.rindex("BdsDxe: starting")

    m.timeouts = usual
    m.power_cycle()  # the same, asked for by a test
    assert len(m.boot_ids) == 3
    assert len(m.notes) == 1
