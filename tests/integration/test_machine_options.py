"""Machine options as markers, on QEMU with the default image: the guest sees its extra disk (by its serial),
the memory the test asked for, and its extra NIC."""

from __future__ import annotations

import pytest

MIB = 1 << 20


@pytest.mark.disks(64)
@pytest.mark.memory(1536)
@pytest.mark.nics(1)
def test_the_guest_sees_its_extra_disk_memory_and_nic(machine):
    # The disk: a blank 64 MiB virtio disk, named by its serial.
    by_id = "/dev/disk/by-id/virtio-railyard-disk1"
    machine.wait_until_succeeds(f"test -b {by_id}")
    assert machine.succeed(f"lsblk -bdno SIZE {by_id}").strip() == str(64 * MIB)
    assert "railyard-disk1" in machine.succeed("lsblk -dno NAME,SERIAL").split()
    assert machine.succeed(f"sudo blkid -p {by_id} || true").strip() == "", "the disk is blank"

    # The memory: 1536 MiB, less what firmware and kernel keep (the run's default is 1024 MiB).
    meminfo = machine.succeed("cat /proc/meminfo")
    total_kib = int(next(line.split()[1] for line in meminfo.splitlines() if line.startswith("MemTotal:")))
    assert 1300 * 1024 < total_kib <= 1536 * 1024, meminfo

    # The NIC: a second Ethernet link, with the MAC of extra NIC 1 of the test's first machine.
    links = machine.succeed("ip -o link show").splitlines()
    ethernet = [line for line in links if "link/ether" in line]
    assert len(ethernet) == 2, links
    assert any("link/ether 52:54:00:ee:01:01 " in line for line in ethernet), links
    assert machine.vm.spec.extra_nics[0].mac == "52:54:00:ee:01:01"

    # Such a machine comes from the warm pool as any other: from the first-boot checkpoint of its shape
    # (taken before Ignition: the disk blank, the MAC above its spec's) or, once its config came back, from
    # a booted checkpoint that keeps its extra disk as the saved machine left it (blank: nothing writes it).
    assert machine.start is not None
    assert machine.start.kind in ("restored-firstboot", "restored-booted"), machine.start.describe()

    # Every boot of the default image says on its console when SSH can be reached (sshd listens and a link
    # has a routable address, the extra NIC notwithstanding); the harness probes slowly until the line shows.
    assert machine.ready_line
    assert "railyard: ready for SSH" in machine.console_text()
