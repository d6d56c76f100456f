"""udev rules a config drops into /etc/udev/rules.d apply from the real root's first coldplug on: a symlink
and a property for the boot disk, a queue attribute set, a program run for a device. One machine serves the
module; the tests only read."""

import pytest

from harness.ignition import IgnitionConfig

RULES = (
    'SUBSYSTEM=="block", KERNEL=="vda", SYMLINK+="railyard-boot-disk", ENV{RAILYARD_ROLE}="boot-disk", '
    'ATTR{queue/read_ahead_kb}="1024"\n'
    'ACTION=="add", SUBSYSTEM=="net", KERNEL=="lo", RUN+="/bin/sh -c \'echo $env{INTERFACE} > /run/railyard-udev-seen\'"\n'
)

pytestmark = pytest.mark.ignition(
    IgnitionConfig().add_file("/etc/udev/rules.d/90-railyard.rules", RULES).to_dict()
)


def test_a_symlink_and_a_property_for_the_boot_disk(module_machine):
    m = module_machine
    m.succeed("sudo udevadm settle --timeout=60")
    assert m.succeed("readlink -f /dev/railyard-boot-disk").strip() == "/dev/vda"
    properties = m.succeed("udevadm info --query=property --name=/dev/vda").splitlines()
    assert "RAILYARD_ROLE=boot-disk" in properties, properties


def test_an_attribute_is_written(module_machine):
    assert module_machine.succeed("cat /sys/block/vda/queue/read_ahead_kb").strip() == "1024"


def test_a_program_runs_for_a_device_of_the_coldplug(module_machine):
    assert module_machine.succeed("cat /run/railyard-udev-seen") == "lo\n"
