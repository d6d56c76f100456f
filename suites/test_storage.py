"""Ignition partitions an extra disk, makes ext4, xfs and btrfs file systems, a LUKS volume and a swap partition on
it, and a RAID1 array over two more; crypttab opens the volume and fstab mounts them at every boot; a reboot
neither reformats nor loses them.

One machine with three blank disks serves the module (machines with extra disks boot cold). The tests only
read, except the last, which reboots the machine and reads again.
"""

import re
from urllib.parse import quote

import pytest

from harness.errors import WaitTimeout
from harness.ignition import IgnitionConfig

DATA = "/dev/disk/by-id/virtio-railyard-disk1"
MIRROR = ("/dev/disk/by-id/virtio-railyard-disk2", "/dev/disk/by-id/virtio-railyard-disk3")
PARTITIONS = {  # label -> size in MiB (xfs needs at least 300)
    "RY-EXT4": 160,
    "RY-XFS": 320,
    "RY-BTRFS": 160,
    "RY-SWAP": 64,
    "RY-LUKS": 64,  # LUKS2's header takes 16 of them
}
FILESYSTEMS = {  # mount point -> (device, format, label)
    "/var/mnt/ext4": ("/dev/disk/by-partlabel/RY-EXT4", "ext4", "ry-ext4"),
    "/var/mnt/xfs": ("/dev/disk/by-partlabel/RY-XFS", "xfs", "ry-xfs"),
    "/var/mnt/btrfs": ("/dev/disk/by-partlabel/RY-BTRFS", "btrfs", "ry-btrfs"),
    "/var/mnt/mirror": ("/dev/md/ry-mirror", "ext4", "ry-mirror"),
    "/var/mnt/secret": ("/dev/mapper/ry-secret", "ext4", "ry-secret"),
}
LUKS_NAME = "ry-secret"
LUKS_KEY = "railyard-luks-key-file\n"
# Ignition formats the volume with this key file and keeps it for the real root, which opens the volume from
# /etc/crypttab at every boot. PBKDF2 with a short iteration time keeps each unlock cheap under emulation
# (LUKS2's default, argon2id, would take a sizeable part of the guest's memory and seconds of emulated CPU).
LUKS_OPTIONS = ["--pbkdf", "pbkdf2", "--iter-time", "200"]
FSTAB = "".join(
    f"LABEL={label} {path} {fmt} defaults,nofail 0 0\n" for path, (_, fmt, label) in FILESYSTEMS.items()
)
FSTAB += "PARTLABEL=RY-SWAP none swap defaults,nofail 0 0\n"
# Ordered before swap.target, which sysinit.target pulls in: with the default dependencies (After=sysinit.target)
# the unit would close an ordering cycle, and systemd breaks a cycle by dropping one of its jobs, which one
# depending on the order it loaded the units in.
SWAPFILE_UNIT = """[Unit]
Description=A swap file on /var
DefaultDependencies=no
RequiresMountsFor=/var
ConditionPathExists=!/var/swapfile
Before=var-swapfile.swap shutdown.target
Conflicts=shutdown.target
[Service]
Type=oneshot
ExecStart=/bin/sh -c 'dd if=/dev/zero of=/var/swapfile bs=1M count=32 status=none && chmod 600 /var/swapfile && mkswap /var/swapfile'
[Install]
WantedBy=var-swapfile.swap
"""
SWAPFILE_SWAP = "[Swap]\nWhat=/var/swapfile\n[Install]\nWantedBy=swap.target\n"


def _config() -> dict:
    partitions = [
        {"number": number, "label": label, "sizeMiB": size, "startMiB": 0}  # 0: right after the previous one
        for number, (label, size) in enumerate(PARTITIONS.items(), start=1)
    ]
    storage = {
        "disks": [
            {"device": DATA, "wipeTable": True, "partitions": partitions},
        ],
        "raid": [{"name": "ry-mirror", "level": "raid1", "devices": list(MIRROR)}],
        "luks": [
            {
                "name": LUKS_NAME,
                "device": "/dev/disk/by-partlabel/RY-LUKS",
                "keyFile": {"source": "data:," + quote(LUKS_KEY)},
                "options": LUKS_OPTIONS,
                "wipeVolume": True,
            }
        ],
        "filesystems": [
            {"device": device, "format": fmt, "label": label, "wipeFilesystem": True}
            for device, fmt, label in FILESYSTEMS.values()
        ]
        + [
            {
                "device": "/dev/disk/by-partlabel/RY-SWAP",
                "format": "swap",
                "label": "ry-swap",
                "wipeFilesystem": True,
            }
        ],
        "directories": [{"path": path, "mode": 0o755} for path in FILESYSTEMS],
    }
    return (
        IgnitionConfig()
        .merge({"ignition": {"version": "3.3.0"}, "storage": storage})
        .add_file("/etc/fstab", FSTAB, append=True)
        .add_unit("railyard-swapfile.service", contents=SWAPFILE_UNIT, enabled=True)
        .add_unit("var-swapfile.swap", contents=SWAPFILE_SWAP, enabled=True)
        .to_dict()
    )


pytestmark = [
    pytest.mark.disks(1024, 256, 256),
    pytest.mark.ignition(_config()),
    pytest.mark.distros("railyard"),
]


def test_partitions_on_an_extra_disk(module_machine):
    """kola: coreos.ignition.mount.partitions"""
    labels = module_machine.succeed(f"lsblk -n -o PARTLABEL {DATA}").split()
    assert labels == list(PARTITIONS), labels
    for label, size in PARTITIONS.items():
        got = int(module_machine.succeed(f"lsblk -n -d -b -o SIZE /dev/disk/by-partlabel/{label}").strip())
        assert got == size * 1024 * 1024, f"{label}: {got} bytes"


@pytest.mark.parametrize("path", ["/var/mnt/ext4", "/var/mnt/xfs", "/var/mnt/btrfs"])
def test_a_file_system_of_each_kind_is_mounted_from_fstab(module_machine, path):
    """kola: cl.ignition.v2.ext4root, cl.ignition.v2.xfsroot, cl.ignition.v2.btrfsroot (here on a data disk)"""
    _, fmt, label = FILESYSTEMS[path]
    source, fstype, found_label = module_machine.succeed(f"findmnt -n -o SOURCE,FSTYPE,LABEL {path}").split()
    assert (fstype, found_label) == (fmt, label), source
    module_machine.succeed(
        f'echo written | sudo tee {path}/probe && sudo sync && test "$(cat {path}/probe)" = written'
    )


def test_raid1_over_two_disks(module_machine):
    """kola: cl.disk.raid1.data"""
    array = module_machine.succeed("findmnt -n -o SOURCE /var/mnt/mirror").strip()
    detail = module_machine.succeed(f"sudo mdadm --detail {array}")
    assert "Raid Level : raid1" in detail, detail
    assert "Active Devices : 2" in detail, detail
    # "active" only while a write is in flight (the one of the test before, say); never degraded, resyncing
    # or recovering: both halves in sync.
    state = re.search(r"^\s*State : (.+)$", detail, re.MULTILINE)
    assert state is not None, detail
    assert {flag.strip() for flag in state.group(1).split(",")} <= {"clean", "active"}, detail
    md = f"/sys/block/{array.rsplit('/', 1)[-1]}/md"
    assert module_machine.succeed(f"cat {md}/degraded {md}/sync_action").split() == ["0", "idle"], detail
    assert "Name : ry-mirror" in detail or ":ry-mirror" in detail, detail


def test_a_luks_volume_is_opened_from_crypttab_with_its_key_file(module_machine):
    """kola: none for a data volume (Fedora CoreOS's luks.* tests encrypt the root with TPM2 or Tang)"""
    m = module_machine
    status = m.succeed(f"sudo cryptsetup status {LUKS_NAME}")
    assert "type:    LUKS2" in status, status
    partition = m.succeed("readlink -f /dev/disk/by-partlabel/RY-LUKS").strip()
    assert f"device:  {partition}" in status, status
    assert "cipher:  aes-xts-plain64" in status, status
    assert m.succeed("findmnt -n -o SOURCE /var/mnt/secret").strip() == f"/dev/mapper/{LUKS_NAME}"

    # Ignition left an entry in crypttab naming a key file it kept; that file, and only it, opens the volume.
    entry = m.succeed(f"sudo awk '$1 == \"{LUKS_NAME}\"' /etc/crypttab").split()
    assert len(entry) >= 3, entry
    assert entry[1] == f"UUID={m.succeed(f'sudo cryptsetup luksUUID {partition}').strip()}", entry
    key_file = entry[2]
    assert m.succeed(f"sudo cat {key_file}") == LUKS_KEY
    assert m.succeed(f"sudo stat -c %a {key_file}").strip() in {"400", "600"}
    m.succeed(f"sudo cryptsetup open --test-passphrase --key-file {key_file} {partition}")
    m.fail(f"printf wrong | sudo cryptsetup open --test-passphrase --key-file - {partition}")

    # What is written through the volume is not on the partition in the clear.
    marker = "railyard-plaintext-marker"
    m.succeed(f"echo {marker} | sudo tee /var/mnt/secret/marker >/dev/null && sudo sync")
    assert m.succeed(f"sudo grep -c -a {marker} /dev/mapper/{LUKS_NAME} || true").strip() != "0"
    assert m.succeed(f"sudo grep -c -a {marker} {partition} || true").strip() == "0"


def test_a_swap_partition_and_a_swap_file_are_active(module_machine):
    """kola: cl.ignition.v2_1.swap, cl.swap_activation"""
    cycles = module_machine.succeed("sudo journalctl -b -o cat | grep -i 'ordering cycle' || true")
    assert not cycles, cycles
    try:  # a swap on a nofail device may come up after sshd
        module_machine.wait_until_succeeds(
            "test $(swapon --show=NAME --noheadings | wc -l) -ge 2", timeout=60
        )
    except WaitTimeout:
        units = module_machine.succeed(
            "systemctl list-units --all --no-pager --plain 'railyard-swap*' '*.swap'"
        )
        pytest.fail(f"fewer than two swaps are active:\n{units}")
    active = module_machine.succeed("swapon --show=NAME --noheadings").split()
    partition = module_machine.succeed("readlink -f /dev/disk/by-partlabel/RY-SWAP").strip()
    assert partition in active, active
    assert "/var/swapfile" in active, active


def test_a_reboot_neither_reformats_nor_unmounts(module_machine):
    """kola: cl.ignition.v2_1.ext4checkexisting"""
    before = {p: module_machine.succeed(f"findmnt -n -o UUID {p}").strip() for p in FILESYSTEMS}
    module_machine.succeed(
        "echo kept | sudo tee /var/mnt/ext4/kept /var/mnt/mirror/kept >/dev/null && sudo sync"
    )
    module_machine.reboot()
    after = {p: module_machine.wait_until_succeeds(f"findmnt -n -o UUID {p}").strip() for p in FILESYSTEMS}
    assert after == before
    assert module_machine.succeed("cat /var/mnt/ext4/kept /var/mnt/mirror/kept") == "kept\nkept\n"
