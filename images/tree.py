"""Turn the cached Debian root file system into the Railyard trees: /usr (one slot) and ROOT.

Order matters: the initramfs is built from the pristine tree (plus the project's dracut
module) so it can be cached apart from the overlay; the overlay and the version stamp come after.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
from collections.abc import Iterable, Mapping
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

from harness.errors import ImageError
from images.hosttools import run

log = logging.getLogger(__name__)

PACKAGE_DIR = Path(__file__).resolve().parent
OVERLAY_DIR = PACKAGE_DIR / "overlay"
DRACUT_DIR = PACKAGE_DIR / "dracut"
AGENT_DIR = PACKAGE_DIR / "agent"
TREE_RECIPE_VERSION = "5"

# Where the image keeps its own dracut inputs inside /usr (so a guest can rebuild its initrd).
DRACUT_CONF_IN_USR = "lib/railyard/dracut.conf"
DRACUT_MODULE_NAMES = ("50railyard", "99railyard-trim")
"""The project's dracut modules (images/dracut/<name>), installed into the tree's modules.d."""

# Module directories (below lib/modules/<kver>/kernel) a virtual test machine never needs.
PRUNED_MODULE_DIRS: tuple[str, ...] = (
    "sound",
    "drivers/gpu",
    "drivers/media",
    "drivers/infiniband",
    "drivers/net/wireless",
    "drivers/net/ethernet",
    "drivers/net/can",
    "drivers/staging",
    "drivers/comedi",
    "drivers/isdn",
    "drivers/bluetooth",
    "drivers/iio",
    "drivers/mtd",
    "drivers/target",
    "drivers/hwmon",
    "drivers/usb",
    "drivers/video",
    "drivers/mmc",
    "drivers/misc",
    "drivers/scsi/qla2xxx",
    "drivers/scsi/lpfc",
    "drivers/scsi/bfa",
    "drivers/scsi/be2iscsi",
    "drivers/scsi/megaraid",
    "drivers/scsi/mpt3sas",
    "drivers/scsi/aic7xxx",
    "net/wireless",
    "net/mac80211",
    "net/bluetooth",
)

# Files of the overlay (or INSTALLED_FILES) that must be executable or have a special mode.
OVERLAY_MODES: dict[str, int] = {
    "usr/bin/railyard-slot": 0o755,
    "usr/bin/railyard-update": 0o755,
    "usr/lib/railyard/update-agent": 0o755,
    "usr/lib/railyard/health-check": 0o755,
    "usr/lib/railyard/ssh-host-key": 0o755,
    "usr/lib/railyard/ssh-ready": 0o755,
    "usr/lib/railyard/audit-rules": 0o755,
    "etc/sudoers.d/railyard": 0o440,
}

# The update agent: the railyard_agent package, in a directory that its launcher,
# usr/lib/railyard/update-agent, puts on sys.path (the `agent` directory beside the launcher).
AGENT_PACKAGE = "railyard_agent"
AGENT_LIB_IN_TREE = "usr/lib/railyard/agent"

# Files of the tree that come from the package rather than the overlay (path in the tree -> source):
# Python programs kept as modules here, so that ruff and mypy check them. Installed after the overlay.
INSTALLED_FILES: dict[str, Path] = {
    "usr/lib/railyard/update-agent": AGENT_DIR / "launcher.py",
    **{
        f"{AGENT_LIB_IN_TREE}/{AGENT_PACKAGE}/{module.name}": module
        for module in sorted((AGENT_DIR / AGENT_PACKAGE).glob("*.py"))
    },
}

# Units a test machine does not need; each costs boot time under emulation.
MASKED_UNITS: tuple[str, ...] = (
    "e2scrub_reap.service",
    "e2scrub_all.timer",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "dpkg-db-backup.timer",
    "fstrim.timer",
    "systemd-networkd-wait-online.service",
    "modprobe@.service",
    "systemd-boot-update.service",
    "systemd-pstore.service",
    "getty@tty1.service",
    "systemd-firstboot.service",
    "ssh.socket",
    # /usr changes with every slot switch; these would rerun on each one.
    "ldconfig.service",
    "systemd-hwdb-update.service",
    "systemd-journal-catalog-update.service",
    "systemd-update-done.service",
)

# systemd runs every generator on each boot and on each switch-root (a process apiece, tenths of a second
# each under emulation). These have nothing to generate on this image: no SysV scripts without native units,
# no rc.local, resume=, offline system updates, integritytab or veritytab, and the GPT auto-mounts are off
# (systemd.gpt_auto=0). Masked in /etc like the units above, so a machine can unmask one.
MASKED_GENERATORS: tuple[str, ...] = (
    "systemd-sysv-generator",
    "systemd-rc-local-generator",
    "systemd-hibernate-resume-generator",
    "systemd-system-update-generator",
    "systemd-gpt-auto-generator",
    "systemd-integritysetup-generator",
    "systemd-veritysetup-generator",
)

# Files of Debian's packages the image leaves out, each one a unit that would run on every boot for nothing.
# Python's binfmt entry (running .pyc files as programs) is the only binfmt.d file here: without it,
# systemd-binfmt.service and the binfmt_misc mount are skipped (their conditions); a machine's own
# /etc/binfmt.d still brings them back.
REMOVED_FILES: tuple[str, ...] = ("usr/lib/binfmt.d/python3.11.conf",)

# A server boots to multi-user.target, as Container Linux does (Debian's default is graphical.target).
DEFAULT_TARGET = "multi-user.target"

# Enablement that belongs to /usr (so an update carries it): (link below lib/systemd/system, target).
STATIC_LINKS: tuple[tuple[str, str], ...] = (
    ("boot-complete.target.requires/railyard-health.service", "../railyard-health.service"),
    ("multi-user.target.wants/railyard-update-agent.service", "../railyard-update-agent.service"),
    ("multi-user.target.wants/railyard-ssh-ready.service", "../railyard-ssh-ready.service"),
    ("sysinit.target.wants/railyard-update-done.service", "../railyard-update-done.service"),
)

# Where the image keeps the public key that update payloads must be signed with.
SIGNING_KEY_IN_USR = "share/railyard/update-signing.pub"
# tmpfiles.d entries that rebuild the image's /var skeleton on an empty /var (a /var partition of its own).
VAR_TMPFILES_IN_USR = "lib/tmpfiles.d/railyard-var.conf"


def tree_hash(root: Path) -> str:
    """Content hash of a directory tree (paths, modes, file contents, link targets)."""
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if "__pycache__" in rel:
            continue
        digest.update(rel.encode() + b"\0")
        if path.is_symlink():
            digest.update(b"L" + os.readlink(path).encode())
        elif path.is_file():
            digest.update(b"F" + path.read_bytes())
        else:
            digest.update(b"D")
        digest.update(b"\0")
    return digest.hexdigest()


def initramfs_inputs_hash() -> str:
    """What the initramfs depends on besides the root file system."""
    digest = hashlib.sha256()
    digest.update(TREE_RECIPE_VERSION.encode())
    digest.update("\n".join(PRUNED_MODULE_DIRS).encode())
    digest.update(tree_hash(DRACUT_DIR).encode())
    return digest.hexdigest()[:16]


def customisation_hash() -> str:
    """What the trees depend on besides the root file system and the initramfs."""
    digest = hashlib.sha256()
    digest.update(TREE_RECIPE_VERSION.encode())
    digest.update(tree_hash(OVERLAY_DIR).encode())
    for rel, src in sorted(INSTALLED_FILES.items()):
        digest.update(rel.encode() + b"\0" + src.read_bytes() + b"\0")
    digest.update(
        repr(
            (
                sorted(OVERLAY_MODES.items()),
                MASKED_UNITS,
                MASKED_GENERATORS,
                STATIC_LINKS,
                DEFAULT_TARGET,
                REMOVED_FILES,
            )
        ).encode()
    )
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class PreparedTree:
    """An extracted root tree, with the kernel moved into /usr/lib/modules/<kver>/."""

    root: Path
    kernel_version: str

    @property
    def usr(self) -> Path:
        return self.root / "usr"

    @property
    def module_dir(self) -> Path:
        return self.usr / "lib" / "modules" / self.kernel_version

    @property
    def vmlinuz(self) -> Path:
        return self.module_dir / "vmlinuz"

    @property
    def initrd(self) -> Path:
        return self.module_dir / "initrd"


def extract_rootfs(tarball: Path, dest: Path) -> PreparedTree:
    dest.mkdir(parents=True)
    run(["tar", "-C", dest, "--numeric-owner", "-xpf", tarball], "extracting the root file system")
    kernels = sorted((dest / "boot").glob("vmlinuz-*"))
    if len(kernels) != 1:
        raise ImageError(f"expected one kernel in the root file system, found {[k.name for k in kernels]}")
    kver = kernels[0].name.removeprefix("vmlinuz-")
    tree = PreparedTree(dest, kver)
    if not tree.module_dir.is_dir():
        raise ImageError(f"kernel {kver} has no modules in {tree.module_dir}")
    shutil.move(kernels[0], tree.vmlinuz)
    for leftover in (dest / "boot").iterdir():
        leftover.unlink()
    for name in ("vmlinuz", "vmlinuz.old", "initrd.img", "initrd.img.old"):
        (dest / name).unlink(missing_ok=True)
    return tree


def installed_packages(root: Path) -> dict[str, str]:
    """The Debian packages installed in a root tree (name -> version), read from dpkg's status file: the
    image's package manifest, which ties a change in behaviour to what changed in the archive."""
    status = root / "var" / "lib" / "dpkg" / "status"
    try:
        text = status.read_text(errors="replace")
    except OSError as exc:
        raise ImageError(f"cannot read the package list of the root file system: {exc}") from exc
    return parse_dpkg_status(text)


def parse_dpkg_status(text: str) -> dict[str, str]:
    """name -> version of the packages a dpkg status file says are installed."""
    packages: dict[str, str] = {}
    for stanza in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in stanza.splitlines():
            key, sep, value = line.partition(":")
            if sep and not line[:1].isspace():
                fields[key] = value.strip()
        if fields.get("Status", "").endswith(" installed") and "Package" in fields:
            packages[fields["Package"]] = fields.get("Version", "")
    return dict(sorted(packages.items()))


def prune_modules(tree: PreparedTree) -> None:
    kernel_dir = tree.module_dir / "kernel"
    for rel in PRUNED_MODULE_DIRS:
        shutil.rmtree(kernel_dir / rel, ignore_errors=True)
    run(["chroot", tree.root, "depmod", "-a", tree.kernel_version], "depmod")


def install_dracut_inputs(tree: PreparedTree) -> None:
    """Put the project's dracut configuration and module into /usr (the guest can rebuild its initrd)."""
    for name in DRACUT_MODULE_NAMES:
        module_dest = tree.usr / "lib" / "dracut" / "modules.d" / name
        shutil.rmtree(module_dest, ignore_errors=True)
        shutil.copytree(DRACUT_DIR / name, module_dest)
        for f in module_dest.iterdir():
            f.chmod(0o644 if f.suffix in (".conf", ".service", ".network") else 0o755)
    conf = tree.usr / DRACUT_CONF_IN_USR
    conf.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(DRACUT_DIR / "dracut.conf", conf)


def build_initramfs(tree: PreparedTree, output: Path) -> None:
    """Run dracut once, in the tree, with the project's configuration and module."""
    install_dracut_inputs(tree)
    empty_confdir = tree.root / "run" / "railyard-dracut-conf.d"
    empty_confdir.mkdir(parents=True, exist_ok=True)
    inside = "/" + str(tree.initrd.relative_to(tree.root))
    run(
        [
            "chroot",
            tree.root,
            "dracut",
            "--force",
            "--no-hostonly",
            "--quiet",
            "--conf",
            "/usr/" + DRACUT_CONF_IN_USR,
            "--confdir",
            "/run/railyard-dracut-conf.d",
            "--kver",
            tree.kernel_version,
            inside,
        ],
        "dracut (initramfs)",
        env={"SYSTEMD_OFFLINE": "1"},
    )
    shutil.rmtree(empty_confdir, ignore_errors=True)
    shutil.copyfile(tree.initrd, output)


def copy_overlay(overlay: Path, root: Path) -> None:
    for src in sorted(overlay.rglob("*")):
        rel = src.relative_to(overlay).as_posix()
        if "__pycache__" in rel:
            continue
        dest = root / rel
        if src.is_dir():
            dest.mkdir(mode=0o755, parents=True, exist_ok=True)
            continue
        _install_file(src, dest, OVERLAY_MODES.get(rel, 0o644))


def install_files(root: Path, files: Mapping[str, Path] = INSTALLED_FILES) -> None:
    """Install the files that live outside the overlay (INSTALLED_FILES), with their OVERLAY_MODES."""
    for rel, src in sorted(files.items()):
        dest = root / rel
        dest.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        _install_file(src, dest, OVERLAY_MODES.get(rel, 0o644))


def _install_file(src: Path, dest: Path, mode: int) -> None:
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    shutil.copyfile(src, dest)
    os.chown(dest, 0, 0)
    dest.chmod(mode)


def os_release(channel: str, version: str, build_key: str, debian_version: str) -> str:
    return (
        'NAME="Railyard"\n'
        "ID=railyard\n"
        "ID_LIKE=debian\n"
        f'PRETTY_NAME="Railyard {version} ({channel})"\n'
        f'VERSION="{version} ({channel})"\n'
        f"VERSION_ID={version}\n"
        # The API level system extensions are built against (as Flatcar's): an extension with this
        # SYSEXT_LEVEL merges into every version, not only into the VERSION_ID it names.
        "SYSEXT_LEVEL=1.0\n"
        f"BUILD_ID={build_key}\n"
        f"RAILYARD_CHANNEL={channel}\n"
        f"RAILYARD_DEBIAN_VERSION={debian_version}\n"
    )


def _symlink(link: Path, target: str) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target)


def customise(tree: PreparedTree, channel: str, version: str, build_key: str, signing_key: str) -> None:
    """Apply the overlay, services, users, the version stamp and the payload-signing key to a tree.

    `signing_key` is the allowed_signers line the update agent verifies payloads with.
    """
    root = tree.root
    copy_overlay(OVERLAY_DIR, root)
    install_files(root)
    key_file = tree.usr / SIGNING_KEY_IN_USR
    key_file.parent.mkdir(parents=True, exist_ok=True)
    key_file.write_text(signing_key.strip() + "\n")
    key_file.chmod(0o644)
    debian_version = (root / "etc" / "debian_version").read_text().strip()
    (tree.usr / "lib" / "os-release").write_text(os_release(channel, version, build_key, debian_version))
    _symlink(root / "etc" / "os-release", "../usr/lib/os-release")
    # Names resolve through resolved's stub (never through whatever resolver the build host had).
    _symlink(root / "etc" / "resolv.conf", "../run/systemd/resolve/stub-resolv.conf")
    (root / "etc" / ".resolv.conf.systemd-resolved.bak").unlink(missing_ok=True)  # the build host's, saved
    unit_dir = tree.usr / "lib" / "systemd" / "system"
    for link, target in STATIC_LINKS:
        _symlink(unit_dir / link, target)
    # Ask systemd to treat the first boot as such: it then applies presets, including Ignition's.
    (root / "etc" / "machine-id").write_text("uninitialized\n")
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    (root / "etc" / "dracut.conf.d" / "11-ifcfg.conf").unlink(missing_ok=True)
    for f in (root / "etc" / "ssh").glob("ssh_host_*"):
        f.unlink()
    for rel in REMOVED_FILES:
        (root / rel).unlink(missing_ok=True)
    run(["chroot", root, "systemctl", "preset-all"], "systemctl preset-all")
    run(["chroot", root, "systemctl", "set-default", DEFAULT_TARGET], "systemctl set-default")
    for unit in MASKED_UNITS:
        _symlink(root / "etc" / "systemd" / "system" / unit, "/dev/null")
    for generator in MASKED_GENERATORS:
        _symlink(root / "etc" / "systemd" / "system-generators" / generator, "/dev/null")
    group = (root / "etc" / "group").read_text()
    if not any(line.startswith("wheel:") for line in group.splitlines()):
        run(["chroot", root, "groupadd", "--system", "wheel"], "groupadd wheel")
    run(["chroot", root, "visudo", "-c", "-q"], "checking sudoers")
    write_var_tmpfiles(tree)
    # Transient directories come up empty at boot.
    for d in ("dev", "proc", "sys", "run", "tmp"):
        path = root / d
        if path.is_dir():
            for child in path.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child)
                else:
                    child.unlink()


def tmpfiles_paths(text: str) -> set[str]:
    """The paths a tmpfiles.d file names (its lines' second field)."""
    paths = set()
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and not fields[0].startswith("#"):
            paths.add(fields[1])
    return paths


def var_tmpfiles(root: Path, covered: AbstractSet[str] = frozenset()) -> str:
    """tmpfiles.d lines that recreate the directories and symlinks of the tree's /var, with their modes and owners.

    The packages' directories under /var (/var/log/audit, /var/lib/chrony...) exist only in the image's root file
    system; a /var on a new, empty file system has none of them, and a service that expects its directory fails.
    Paths another tmpfiles.d file already names (`covered`) are left to it: a path twice is a warning at boot.
    Files are not recreated: what a package leaves there is state of the build, not of the machine.
    """
    lines = []
    var = root / "var"
    for dirpath, dirnames, filenames in os.walk(var):
        dirnames.sort()
        here = Path(dirpath)
        for name in [*dirnames, *sorted(filenames)]:
            path = here / name
            guest_path = "/" + path.relative_to(root).as_posix()
            if guest_path in covered or any(c in guest_path for c in " \t\\"):
                continue
            st = os.lstat(path)
            if path.is_symlink():
                lines.append(f"L {guest_path} - - - - {os.readlink(path)}")
            elif path.is_dir():
                lines.append(f"d {guest_path} {st.st_mode & 0o7777:04o} {st.st_uid} {st.st_gid} -")
        dirnames[:] = [d for d in dirnames if not (here / d).is_symlink()]
    header = "# The image's /var skeleton, recreated on an empty /var. Generated when the image is built.\n"
    return header + "".join(line + "\n" for line in lines)


def write_var_tmpfiles(tree: PreparedTree) -> None:
    """Install var_tmpfiles() for the tree, leaving out the paths the tree's other tmpfiles.d files name."""
    covered: set[str] = set()
    for folder in (tree.usr / "lib" / "tmpfiles.d", tree.root / "etc" / "tmpfiles.d"):
        for conf in sorted(folder.glob("*.conf")) if folder.is_dir() else []:
            if conf.is_file():
                covered |= tmpfiles_paths(conf.read_text(errors="replace"))
    target = tree.usr / VAR_TMPFILES_IN_USR
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(var_tmpfiles(tree.root, covered))
    target.chmod(0o644)


def split_usr(tree: PreparedTree, usr_dest: Path) -> Path:
    """Move /usr out of the tree (leaving an empty mount point); return the new /usr location."""
    shutil.move(tree.usr, usr_dest)
    (tree.root / "usr").mkdir(mode=0o755)
    return usr_dest


def directory_bytes(root: Path, skip: Iterable[Path] = ()) -> int:
    """Approximate space a tree takes in ext4: file sizes rounded up to 4 KiB, plus one block per entry."""
    skipped = {p.resolve() for p in skip}
    total = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if (Path(dirpath) / d).resolve() not in skipped]
        total += 4096 * (1 + len(dirnames))
        for name in filenames:
            try:
                st = os.lstat(os.path.join(dirpath, name))
            except FileNotFoundError:
                continue
            total += (st.st_size + 4095) // 4096 * 4096 + 256
    return total
