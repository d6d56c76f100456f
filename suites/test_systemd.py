"""systemd applies what a user drops into /etc at first boot: timers, tmpfiles, sysusers, sysctl, modules,
restart policies. One machine serves the module; the tests only read (the restart test kills its own unit)."""

import pytest

from harness.ignition import IgnitionConfig

TIMER = "[Unit]\nDescription=Railyard tick\n[Timer]\nOnActiveSec=1s\nOnUnitActiveSec=2s\nAccuracySec=1ms\n"
TIMER_INSTALL = "[Install]\nWantedBy=timers.target\n"
TICK = "[Unit]\nDescription=Railyard tick\n[Service]\nType=oneshot\nExecStart=/bin/sh -c 'date +%%s >> /run/railyard-ticks'\n"
RESTARTS = (
    "[Unit]\nDescription=A service that comes back\n"
    "[Service]\nExecStart=/bin/sleep infinity\nRestart=always\nRestartSec=1\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

CONFIG = (
    IgnitionConfig()
    .add_unit("railyard-tick.timer", contents=TIMER + TIMER_INSTALL, enabled=True)
    .add_unit("railyard-tick.service", contents=TICK)
    .add_unit("railyard-restarts.service", contents=RESTARTS, enabled=True)
    .add_file(
        "/etc/tmpfiles.d/railyard.conf",
        "d /run/railyard-tmp 0750 root root -\n"
        "f /run/railyard-tmp/made 0640 root root - made-by-tmpfiles\n"
        "L /run/railyard-link - - - - /etc/os-release\n",
    )
    .add_file("/etc/sysusers.d/railyard.conf", 'u railyard-svc - "Railyard service" /var/lib/railyard-svc\n')
    .add_file("/etc/sysctl.d/90-railyard.conf", "vm.swappiness = 13\nkernel.pid_max = 65536\n")
    .add_file("/etc/modules-load.d/railyard.conf", "tcp_bbr\n")
    .to_dict()
)

pytestmark = pytest.mark.ignition(CONFIG)


def test_a_timer_fires_again_and_again(module_machine):
    """kola: cl.ignition.instantiated.enable-unit (a timer enabled by Ignition runs)"""
    assert module_machine.succeed("systemctl is-enabled railyard-tick.timer").strip() == "enabled"
    module_machine.wait_until_succeeds("test $(wc -l < /run/railyard-ticks) -ge 3", timeout=60)
    ticks = [int(t) for t in module_machine.succeed("cat /run/railyard-ticks").split()]
    assert ticks == sorted(ticks), ticks
    assert ticks[-1] > ticks[0], ticks


def test_tmpfiles_creates_directories_files_and_links(module_machine):
    assert module_machine.succeed("sudo stat -c %F:%a /run/railyard-tmp").strip() == "directory:750"
    assert module_machine.succeed("sudo cat /run/railyard-tmp/made") == "made-by-tmpfiles"
    assert module_machine.succeed("sudo stat -c %a /run/railyard-tmp/made").strip() == "640"
    assert module_machine.succeed("readlink /run/railyard-link").strip() == "/etc/os-release"


def test_sysusers_creates_a_system_user(module_machine):
    """kola: systemd.sysusers.gshadow (sysusers at boot)"""
    entry = module_machine.succeed("getent passwd railyard-svc").strip().split(":")
    assert entry[0] == "railyard-svc", entry
    assert entry[5] == "/var/lib/railyard-svc", entry
    uid_max = int(
        module_machine.succeed("awk '$1 == \"SYS_UID_MAX\" {print $2}' /etc/login.defs").strip() or 999
    )
    assert 0 < int(entry[2]) <= uid_max, f"uid {entry[2]} is not a system uid"
    module_machine.succeed("getent group railyard-svc")


def test_sysctl_d_is_applied(module_machine):
    assert module_machine.succeed("sysctl -n vm.swappiness").strip() == "13"
    assert module_machine.succeed("sysctl -n kernel.pid_max").strip() == "65536"


def test_modules_load_d_loads_a_module(module_machine):
    module_machine.succeed("test -d /sys/module/tcp_bbr")
    unit = "systemd-modules-load.service"
    assert module_machine.succeed(f"systemctl show -P ActiveState {unit}").strip() == "active"
    assert module_machine.succeed(f"systemctl show -P ExecMainStatus {unit}").strip() == "0"


def test_a_killed_service_is_restarted_by_its_policy(module_machine):
    unit = "railyard-restarts.service"
    module_machine.wait_for_unit(unit)
    first = module_machine.succeed(f"systemctl show -P MainPID {unit}").strip()
    module_machine.succeed(f"sudo kill -KILL {first}")
    module_machine.wait_until_succeeds(
        f'test "$(systemctl show -P MainPID {unit})" != {first} && systemctl is-active {unit}', timeout=60
    )
    assert int(module_machine.succeed(f"systemctl show -P NRestarts {unit}").strip()) >= 1


def test_the_journal_is_kept_on_disk(module_machine):
    machine_id = module_machine.succeed("cat /etc/machine-id").strip()
    files = module_machine.succeed(f"sudo ls /var/log/journal/{machine_id}").split()
    assert any(name.startswith("system") and name.endswith(".journal") for name in files), files
