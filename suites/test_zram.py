"""Compressed swap in RAM (zram), set up by a unit a config writes, as Container-Linux users add swap to a
machine without a swap partition: the device with its size and compressor, active as swap above any other.
One machine serves the module; the tests only read."""

import pytest

from harness.ignition import IgnitionConfig

SIZE = 64 << 20
ZRAM = (
    "[Unit]\nDescription=Railyard zram swap\nDefaultDependencies=no\nBefore=swap.target\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    "ExecStart=/usr/sbin/modprobe zram num_devices=1\n"
    "ExecStart=/bin/sh -c 'echo lzo-rle > /sys/block/zram0/comp_algorithm'\n"
    f"ExecStart=/bin/sh -c 'echo {SIZE} > /sys/block/zram0/disksize'\n"
    "ExecStart=/usr/sbin/mkswap -L railyard-zram /dev/zram0\n"
    "ExecStart=/usr/sbin/swapon -p 100 /dev/zram0\n"
    "ExecStop=/usr/sbin/swapoff /dev/zram0\n"
    "[Install]\nWantedBy=swap.target\n"
)

pytestmark = pytest.mark.ignition(
    IgnitionConfig().add_unit("railyard-zram.service", contents=ZRAM, enabled=True).to_dict()
)


def test_a_zram_device_of_the_size_and_compressor_given(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-zram.service")
    assert int(m.succeed("cat /sys/block/zram0/disksize")) == SIZE
    assert "[lzo-rle]" in m.succeed("cat /sys/block/zram0/comp_algorithm")


def test_it_is_swap_with_the_highest_priority(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-zram.service")
    swaps = [line.split() for line in m.succeed("cat /proc/swaps").splitlines()[1:]]
    # The swap is the device less its first page, mkswap's header.
    assert ["/dev/zram0", "partition", str((SIZE >> 10) - 4)] == swaps[0][:3], swaps
    assert swaps[0][4] == "100", swaps
    assert m.succeed("sudo blkid -o value -s LABEL /dev/zram0").strip() == "railyard-zram"
