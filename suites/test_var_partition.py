"""/var on a partition of its own: Ignition partitions an extra disk, makes the file system, mounts it at /var
while it writes the config's files (so they land on the new partition), and a mount unit mounts it at every
boot. The root file system's own /var stays underneath, unused.

One machine serves the module (machines with extra disks boot cold); the last test reboots it.
"""

import pytest

from harness.ignition import IgnitionConfig

DISK = "/dev/disk/by-id/virtio-railyard-disk1"
PARTITION = "/dev/disk/by-partlabel/RY-VAR"
MARKER = "/var/lib/railyard-var/written-by-ignition"
# What Butane's `with_mount_unit` writes for a file system with a path: mounted before local-fs.target,
# after its fsck.
VAR_MOUNT = """[Unit]
Description=/var on its own partition
Before=local-fs.target
Requires=systemd-fsck@dev-disk-by\\x2dpartlabel-RY\\x2dVAR.service
After=systemd-fsck@dev-disk-by\\x2dpartlabel-RY\\x2dVAR.service
[Mount]
What=/dev/disk/by-partlabel/RY-VAR
Where=/var
Type=ext4
[Install]
RequiredBy=local-fs.target
"""


def _config() -> dict:
    storage = {
        "disks": [
            {
                "device": DISK,
                "wipeTable": True,
                "partitions": [{"number": 1, "label": "RY-VAR", "sizeMiB": 0, "startMiB": 0}],
            }
        ],
        "filesystems": [
            {"device": PARTITION, "format": "ext4", "label": "ry-var", "path": "/var", "wipeFilesystem": True}
        ],
    }
    return (
        IgnitionConfig()
        .merge({"ignition": {"version": "3.3.0"}, "storage": storage})
        .add_file(MARKER, "on the var partition\n", mode=0o644)
        .add_unit("var.mount", contents=VAR_MOUNT, enabled=True)
        .add_unit("auditd.service", enabled=True)  # off by default; its log is one of the packages' /var dirs
        .to_dict()
    )


pytestmark = [
    pytest.mark.disks(512),
    pytest.mark.ignition(_config()),
    pytest.mark.distros("railyard"),
]


def var_source(m) -> tuple[str, str, str]:
    source, fstype, label = m.succeed("findmnt -n -o SOURCE,FSTYPE,LABEL /var").split()
    return source, fstype, label


def test_var_is_mounted_from_its_own_partition_with_what_ignition_wrote(module_machine):
    """kola: ext.config.var-mount (Fedora CoreOS)"""
    m = module_machine
    source, fstype, label = var_source(m)
    assert (fstype, label) == ("ext4", "ry-var")
    assert source == m.succeed(f"readlink -f {PARTITION}").strip()
    assert m.succeed(f"cat {MARKER}") == "on the var partition\n"
    # Ignition wrote the file onto the new file system, not into the root file system's /var below it.
    m.succeed("sudo mkdir -p /run/railyard-root && sudo mount --bind / /run/railyard-root")
    try:
        m.fail(f"test -e /run/railyard-root{MARKER}")
    finally:
        m.succeed("sudo umount /run/railyard-root")
    # The system's own state lives there too: the persistent journal, made at boot by tmpfiles and journald.
    m.succeed("sudo test -d /var/log/journal/$(cat /etc/machine-id)")
    # And the packages' directories, rebuilt by the image's tmpfiles.d skeleton: auditd logs on the new /var.
    m.succeed("sudo test -d /var/log/audit && systemctl is-active auditd.service")
    assert m.settle() == "running"


def test_var_stays_mounted_and_is_not_reformatted_after_a_reboot(module_machine):
    """kola: cl.ignition.v2_1.ext4checkexisting (for /var)"""
    m = module_machine
    uuid = m.succeed("findmnt -n -o UUID /var").strip()
    m.succeed("echo kept | sudo tee /var/lib/railyard-var/kept >/dev/null && sudo sync")
    m.reboot()
    assert m.succeed("findmnt -n -o UUID /var").strip() == uuid
    assert var_source(m)[2] == "ry-var"
    assert m.succeed(f"cat /var/lib/railyard-var/kept {MARKER}") == "kept\non the var partition\n"
    assert m.settle() == "running"
