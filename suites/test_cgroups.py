"""Resource control through cgroup v2: the limits a unit and its slice declare are the ones the kernel
enforces, and a process over its memory limit is killed by the kernel's OOM killer inside its own unit, not
anywhere else. One machine serves the module; the OOM test runs in a transient unit of its own."""

import pytest

from harness.ignition import IgnitionConfig

SLICE = "[Unit]\nDescription=Railyard slice\n[Slice]\nMemoryMax=256M\nCPUWeight=200\n"
LIMITED = (
    "[Unit]\nDescription=Railyard limited\n"
    "[Service]\nSlice=railyard.slice\nExecStart=/bin/sleep infinity\n"
    "MemoryMax=64M\nTasksMax=16\nCPUWeight=50\n"
    "[Install]\nWantedBy=multi-user.target\n"
)
CGROUP = "/sys/fs/cgroup/railyard.slice/railyard-limited.service"

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_unit("railyard.slice", contents=SLICE)
    .add_unit("railyard-limited.service", contents=LIMITED, enabled=True)
    .to_dict()
)


def read(machine, path: str) -> str:
    return machine.succeed(f"cat {path}").strip()


def test_the_unified_hierarchy_is_mounted(module_machine):
    assert module_machine.succeed("stat -f -c %T /sys/fs/cgroup").strip() == "cgroup2fs"


def test_a_unit_and_its_slice_get_the_limits_they_declare(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-limited.service")
    assert read(m, f"{CGROUP}/memory.max") == str(64 << 20)
    assert read(m, f"{CGROUP}/pids.max") == "16"
    assert read(m, f"{CGROUP}/cpu.weight") == "50"
    assert read(m, "/sys/fs/cgroup/railyard.slice/memory.max") == str(256 << 20)
    assert read(m, "/sys/fs/cgroup/railyard.slice/cpu.weight") == "200"
    pid = m.succeed("systemctl show -P MainPID railyard-limited.service").strip()
    assert read(m, f"/proc/{pid}/cgroup") == "0::/railyard.slice/railyard-limited.service"


def test_a_process_over_its_memory_limit_is_killed_in_its_unit(module_machine):
    m = module_machine
    result = m.execute(
        "sudo systemd-run --wait --quiet --unit railyard-oom -p MemoryMax=32M -p MemorySwapMax=0 "
        "/usr/bin/tail /dev/zero",  # one endless line: tail keeps all of it in memory
        timeout=120,
    )
    assert not result.ok, result
    assert m.succeed("systemctl show -P Result railyard-oom.service").strip() == "oom-kill"
    # Nothing outside the unit was killed.
    m.succeed("systemctl is-active railyard-limited.service sshd.socket systemd-journald.service")
    m.succeed("sudo systemctl reset-failed railyard-oom.service")
