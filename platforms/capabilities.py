"""What a test can ask of a platform's machines: capabilities (`@pytest.mark.requires`) and machine options
(markers of the same names), as the names a platform declares in `Platform.machine_capabilities` and
`Platform.machine_options`."""

from __future__ import annotations

# Optional capabilities a test can require with @pytest.mark.requires("..."). A platform declares the ones its
# machines have in one place, `Platform.machine_capabilities`; its machines get them when booted.
CAP_HARD_RESET = "hard-reset"
"""`Machine.reset()`: the power is cut and the machine starts again at once (a warm reset)."""
CAP_POWER_CYCLE = "power-cycle"
"""`Machine.power_cycle()`: a cold boot on the same disks and firmware variables."""
CAP_SNAPSHOT = "snapshot"
"""The machine's state can be saved and restored (QEMU's savevm/loadvm)."""
CAP_PRIVATE_NETWORK = "private-network"
"""Machines booted together share a network on which `GuestMachine.private_address` reaches each other."""
CAP_HOST_SERVICES = "host-services"
"""A service the tests start on the host (the Omaha server) is reachable from the guest."""
CAP_BOOT_HOST_SERVICES = "boot-host-services"
"""A service on the host's 127.0.0.1 is reachable from the guest from its first boot on, Ignition in the
initramfs included, at `Platform.boot_host_address` (remote Ignition configs and files)."""
CAPABILITIES = frozenset(
    {
        CAP_HARD_RESET,
        CAP_POWER_CYCLE,
        CAP_SNAPSHOT,
        CAP_PRIVATE_NETWORK,
        CAP_HOST_SERVICES,
        CAP_BOOT_HOST_SERVICES,
    }
)

# Machine options a test asks for with markers of the same names (see harness.machine_options). A platform
# declares the ones its machines honour in `Platform.machine_options`; a test asking for another is skipped.
OPTION_DISKS = "disks"
"""`MachineSpec.extra_disks_mib`: extra blank disks."""
OPTION_NICS = "nics"
"""`MachineSpec.extra_nics`: extra NICs."""
OPTION_MEMORY = "memory"
"""`MachineSpec.memory_mib` set by the test, not the run."""
OPTION_FIRMWARE = "firmware"
"""`MachineSpec.firmware` set by the test, not the run or the image."""
OPTION_KARGS = "kargs"
"""`MachineSpec.kernel_args`: extra kernel arguments from the first boot on."""
MACHINE_OPTIONS = frozenset({OPTION_DISKS, OPTION_NICS, OPTION_MEMORY, OPTION_FIRMWARE, OPTION_KARGS})
