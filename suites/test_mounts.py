"""Mount units a config writes (Container Linux's way to mount, as /etc/fstab is the image's): a tmpfs with its
size and mode, mounted at boot, and an automount whose file system is mounted only once something looks
inside. One machine serves the module; only the automount test changes what is mounted."""

import pytest

from harness.ignition import IgnitionConfig

SCRATCH = (
    "[Unit]\nDescription=Railyard scratch space\n"
    "[Mount]\nWhat=tmpfs\nWhere=/var/mnt/scratch\nType=tmpfs\nOptions=size=16m,mode=1770,nosuid,nodev\n"
    "[Install]\nWantedBy=local-fs.target\n"
)
LAZY_MOUNT = "[Unit]\nDescription=Railyard lazy\n[Mount]\nWhat=tmpfs\nWhere=/var/mnt/lazy\nType=tmpfs\nOptions=size=8m\n"
LAZY_AUTOMOUNT = (
    "[Unit]\nDescription=Railyard lazy, on first use\n"
    "[Automount]\nWhere=/var/mnt/lazy\n"
    "[Install]\nWantedBy=local-fs.target\n"
)

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_unit("var-mnt-scratch.mount", contents=SCRATCH, enabled=True)
    .add_unit("var-mnt-lazy.mount", contents=LAZY_MOUNT)
    .add_unit("var-mnt-lazy.automount", contents=LAZY_AUTOMOUNT, enabled=True)
    .to_dict()
)


def mount_of(machine, where: str) -> tuple[str, set[str]]:
    """The file system type of the top mount at `where` and its options."""
    fstype, options = machine.succeed(f"findmnt -n -f -o FSTYPE,OPTIONS --mountpoint {where}").split()
    return fstype, set(options.split(","))


def test_a_mount_unit_mounts_at_boot(module_machine):
    m = module_machine
    assert m.succeed("systemctl is-active var-mnt-scratch.mount").strip() == "active"
    fstype, options = mount_of(m, "/var/mnt/scratch")
    assert fstype == "tmpfs"
    assert {"size=16384k", "mode=1770", "nosuid", "nodev"} <= options, options
    assert m.succeed("stat -c %a:%U /var/mnt/scratch").strip() == "1770:root"


def test_an_automount_mounts_on_first_use(module_machine):
    m = module_machine
    assert m.succeed("systemctl is-active var-mnt-lazy.automount").strip() == "active"
    assert mount_of(m, "/var/mnt/lazy")[0] == "autofs"
    assert m.succeed("systemctl is-active var-mnt-lazy.mount || true").strip() == "inactive"
    m.succeed("ls /var/mnt/lazy")
    assert m.succeed("systemctl is-active var-mnt-lazy.mount").strip() == "active"
    assert set(m.succeed("findmnt -n -o FSTYPE --mountpoint /var/mnt/lazy").split()) == {"autofs", "tmpfs"}
