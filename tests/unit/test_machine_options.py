"""Machine options as markers: parsed and checked at collection, carried in Requirements, resolved into the
machine's shape, and skipped with a reason where the platform or the image cannot give them."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from harness import shape
from harness.admission import BootSlots
from harness.errors import BootError, ConfigError
from harness.factory import cold_boot_reason
from harness.machine_options import (
    FEATURE_KERNEL_ARGS,
    MAX_DISKS,
    MachineOptions,
    boot_loader_version,
    kernel_args_refusal,
)
from harness.targets import MARKERS, Target, requirements_from_marks, skip_reason
from images.metadata import ImageMetadata
from platforms.aws import AwsPlatform
from platforms.azure import AzurePlatform
from platforms.base import (
    MACHINE_OPTIONS,
    FirstBootConfig,
    MachineSpec,
    disk_serial,
    kernel_args_smbios_strings,
)
from platforms.libvirt import LibvirtPlatform
from platforms.qemu import QemuPlatform
from tests.integration.helpers import run_inner


@dataclass
class M:
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


def options(*marks: M) -> MachineOptions:
    return requirements_from_marks(marks).machine


QEMU = Target("qemu", "stable", "railyard", "2.0.0")
AWS = Target("aws", "stable", "railyard", "2.0.0")


# -- parsing --------------------------------------------------------------------------------------------


def test_no_markers_ask_for_nothing():
    assert options() == MachineOptions()
    assert MachineOptions().asked() == []


def test_each_marker_lands_in_its_field():
    got = options(
        M("disks", (1024, 2048)),
        M("nics", (1,)),
        M("memory", (2048,)),
        M("firmware", ("bios",)),
        M("kargs", ("foo=bar",)),
    )
    assert got == MachineOptions(
        disks_mib=(1024, 2048), nics=1, memory_mib=2048, firmware="bios", kernel_args=("foo=bar",)
    )
    assert got.asked() == ["disks", "nics", "memory", "firmware", "kargs"]


def test_disk_sizes_may_come_as_a_list():
    assert options(M("disks", ([64, 128],))).disks_mib == (64, 128)


def test_the_closest_marker_wins_but_kernel_arguments_add_up_outer_first():
    # iter_markers gives the test's own markers first, then the class's, then the module's.
    got = options(
        M("memory", (2048,)),
        M("disks", (64,)),
        M("kargs", ("inner=1",)),
        M("memory", (4096,)),
        M("disks", (1, 2, 3)),
        M("kargs", ("outer=1",)),
        M("firmware", ("uefi",)),
    )
    assert got.memory_mib == 2048
    assert got.disks_mib == (64,)
    assert got.firmware == "uefi"
    assert got.kernel_args == ("outer=1", "inner=1")


def test_kernel_arguments_are_normalised_to_single_spaces():
    assert options(M("kargs", ("  a=1   b ", "c"))).kernel_args == ("a=1 b", "c")


@pytest.mark.parametrize(
    ("mark", "message"),
    [
        (M("disks"), "disks needs at least one size in MiB"),
        (M("disks", ("1G",)), "bad size '1G'"),
        (M("disks", (1.5,)), "bad size 1.5"),
        (M("disks", (True,)), "bad size True"),
        (M("disks", (0,)), "size 0 MiB is out of range"),
        (M("disks", (1 << 21,)), "out of range"),
        (M("disks", tuple([8] * (MAX_DISKS + 1))), f"at most {MAX_DISKS}"),
        (M("nics"), "nics takes exactly one argument, not 0"),
        (M("nics", (1, 2)), "nics takes exactly one argument, not 2"),
        (M("nics", (0,)), "between 1 and 8"),
        (M("nics", (9,)), "between 1 and 8"),
        (M("nics", ("1",)), "as a whole number"),
        (M("memory", (64,)), "at least 128 MiB"),
        (M("memory", ("2G",)), "as a whole number"),
        (M("memory", (2048.0,)), "as a whole number"),
        (M("firmware", ("coreboot",)), "unknown firmware; choose one of uefi, bios"),
        (M("firmware"), "exactly one argument"),
        (M("kargs"), "kargs needs at least one argument"),
        (M("kargs", ("",)), "bad argument ''"),
        (M("kargs", (3,)), "bad argument 3"),
        (M("kargs", ("a=1\nb=2",)), "control character"),
        (M("kargs", ("x" * 1025,)), "at most 1024"),
        (M("memory", (), {"mib": 2048}), "takes no keyword arguments"),
    ],
)
def test_a_bad_argument_is_one_clear_error(mark, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        options(mark)
    assert f"@pytest.mark.{mark.name}" in str(info.value)


def test_every_machine_option_is_a_registered_marker():
    registered = {signature.split("(")[0] for signature in MARKERS}
    assert registered >= MACHINE_OPTIONS


# -- what a platform can give ----------------------------------------------------------------------------


@pytest.mark.parametrize("platform", [QemuPlatform, LibvirtPlatform])
def test_local_platforms_give_every_option(platform):
    req = requirements_from_marks(
        [
            M("disks", (64,)),
            M("nics", (2,)),
            M("memory", (1536,)),
            M("firmware", ("bios",)),
            M("kargs", ("a",)),
        ]
    )
    assert skip_reason(req, QEMU, option_refusal=platform.machine_option_refusal) is None


@pytest.mark.parametrize(
    ("mark", "reason"),
    [
        (M("memory", (2048,)), "@pytest.mark.memory: on aws, the instance type sets a machine's memory "
         "(--aws-instance-type)"),
        (M("firmware", ("bios",)), "@pytest.mark.firmware: on aws, the image sets a machine's firmware"),
        (M("disks", (64,)), "@pytest.mark.disks: on aws, machines get no extra disks"),
        (M("nics", (1,)), "@pytest.mark.nics: on aws, machines get no extra NICs"),
        (M("kargs", ("a=1",)), "@pytest.mark.kargs: on aws, the registered image sets the kernel command line"),
    ],
)  # fmt: skip
def test_a_cloud_skips_what_it_cannot_give_with_the_reason(mark, reason):
    req = requirements_from_marks([mark])
    got = skip_reason(req, AWS, option_refusal=AwsPlatform.machine_option_refusal)
    assert got is not None
    assert got.startswith(reason)


def test_the_reasons_of_several_refused_options_are_all_given():
    req = requirements_from_marks([M("memory", (2048,)), M("disks", (64,))])
    got = skip_reason(
        req, Target("azure", "stable", "", None), option_refusal=AzurePlatform.machine_option_refusal
    )
    assert got == (
        "@pytest.mark.disks: on azure, machines get no extra disks; "
        "@pytest.mark.memory: on azure, the instance type sets a machine's memory (--azure-vm-size)"
    )


def test_options_are_decided_before_the_image_is_known():
    """The plugin asks before building an image: the target has no distro yet."""
    req = requirements_from_marks([M("disks", (64,))])
    early = Target("aws", "stable", "", None)
    assert skip_reason(req, early, option_refusal=AwsPlatform.machine_option_refusal) is not None
    assert skip_reason(req, early) is None, "without a platform's answer nothing is checked"


# -- what an image can take -------------------------------------------------------------------------------


def image(packages: dict[str, str] | None = None, features: tuple[str, ...] = ()) -> ImageMetadata:
    return ImageMetadata(
        name="railyard-stable-2.0.0",
        version="2.0.0",
        build_key="k",
        packages=packages or {},
        features=features,
    )


KARGS = MachineOptions(kernel_args=("foo=bar",))


def test_the_default_images_systemd_boot_252_takes_no_kernel_arguments():
    reason = kernel_args_refusal(KARGS, image({"systemd-boot-efi": "252.39-1~deb12u2"}), "uefi")
    assert reason is not None
    assert "systemd-boot 252 does not read SMBIOS io.systemd.boot.kernel-cmdline-extra" in reason
    assert "256" in reason


@pytest.mark.parametrize(
    "metadata",
    [image({"systemd-boot-efi": "257.9-1~deb13u1"}), image({"systemd-boot": "1:256.1-2"}),
     image(features=(FEATURE_KERNEL_ARGS,))],
)  # fmt: skip
def test_an_image_whose_boot_loader_reads_smbios_takes_them(metadata):
    assert kernel_args_refusal(KARGS, metadata, "uefi") is None


def test_kernel_arguments_need_uefi_and_metadata():
    supported = image(features=(FEATURE_KERNEL_ARGS,))
    assert "boots with bios" in (kernel_args_refusal(KARGS, supported, "bios") or "")
    assert "no Railyard metadata" in (kernel_args_refusal(KARGS, None, "uefi") or "")
    assert kernel_args_refusal(MachineOptions(), None, "bios") is None, "nothing asked, nothing refused"


def test_boot_loader_version_reads_the_package_list():
    assert boot_loader_version({"systemd-boot-efi": "252.39-1~deb12u2"}) == 252
    assert boot_loader_version({"systemd-boot": "1:257.1-1"}) == 257
    assert boot_loader_version({"systemd": "252"}) is None


def test_kernel_arguments_become_smbios_strings_for_the_boot_loader_and_the_stub():
    assert kernel_args_smbios_strings(()) == []
    assert kernel_args_smbios_strings(("a=1", "b")) == [
        "io.systemd.boot.kernel-cmdline-extra=a=1 b",
        "io.systemd.stub.kernel-cmdline-extra=a=1 b",
    ]


# -- resolved into the machine ------------------------------------------------------------------------------


def test_the_markers_override_the_runs_memory_and_firmware():
    given = {"machine_memory": 4096, "machine_firmware": "uefi"}
    assert shape.memory_mib(given) == 4096
    assert shape.memory_mib(given, 1536) == 1536
    assert shape.memory_mib({}, None) == shape.DEFAULT_MEMORY_MIB
    assert shape.firmware(given, "uefi", "bios") == "bios"
    assert shape.firmware({}, "bios") == "bios"
    assert shape.firmware({}, "bios", "uefi") == "uefi"


def test_disk_serials_fit_virtio_blk():
    assert disk_serial(1) == "railyard-disk1"
    assert all(len(disk_serial(i)) <= 20 for i in range(1, MAX_DISKS + 1))


def test_a_machines_own_memory_is_what_admission_waits_for(tmp_path: Path):
    slots = BootSlots(1, tmp_path, memory_mib=0)
    with pytest.raises(BootError, match="no machine slot"):
        slots.slot("big", timeout=0.5, memory_mib=10**9).acquire()
    with slots.slot("small", timeout=0.5, memory_mib=1):
        pass


def spec(**changes: object) -> MachineSpec:
    values: dict[str, object] = {
        "name": "m1",
        "image": Path("/images/base.qcow2"),
        "ignition": FirstBootConfig("{}", "3.3.0"),
        "ignition_fw_cfg": "opt/com.coreos/config",
        "workdir": Path("/out/m1"),
    }
    values.update(changes)
    return MachineSpec(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("flags", "reason"),
    [
        (set(), None),
        ({"no_console_check"}, None),
        ({"cold_boot", "no_console_check"}, "flags cold_boot"),
        ({"no_settle", "no_ssh_key"}, "flags no_settle, no_ssh_key"),
    ],
)
def test_only_the_flags_make_a_machine_boot_cold(flags, reason):
    # Extra disks are saved with a booted checkpoint, and MACs and disk sizes are part of its signature
    # (tests/unit/test_qemu_checkpoint.py): no shape keeps a machine from the warm pool.
    assert cold_boot_reason(flags) == reason


# -- through the plugin (a child pytest that boots nothing) -------------------------------------------------


def test_a_bad_marker_stops_the_run_at_collection_with_one_clear_error(pytester):
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.disks("1G")
        def test_x(machine):
            pass
        """
    )
    result = run_inner(pytester)
    assert result.ret == pytest.ExitCode.INTERRUPTED  # stopped at collection: nothing ran, nothing booted
    result.stdout.fnmatch_lines(
        [
            "E   pytest.UsageError: test_x.py::test_x: @pytest.mark.disks: bad size '1G'; give each size in MiB*"
        ]
    )
    result.stdout.fnmatch_lines(["*Interrupted: 1 error during collection*"])
    assert not (pytester.path / "out").exists()


def test_a_cloud_skips_what_it_cannot_give_before_anything_is_made(pytester):
    pytester.makepyfile(
        test_x="""
        import pytest

        @pytest.mark.disks(64)
        @pytest.mark.memory(1536)
        def test_x(machine):
            raise AssertionError("never runs")
        """
    )
    result = run_inner(pytester, "--platform=aws")
    result.assert_outcomes(skipped=1)
    result.stdout.fnmatch_lines(
        ["*@pytest.mark.disks: on aws, machines get no extra disks; @pytest.mark.memory:*"]
    )
    out = pytester.path / "out"
    made = sorted(p.name for p in out.iterdir()) if out.exists() else []
    assert made in ([], ["reports"]), f"no platform, image or key was set up: {made}"


def test_the_markers_are_registered(pytester):
    result = pytester.runpytest_subprocess("--markers")
    for signature in ("disks(*sizes_mib)", "nics(count)", "memory(mib)", "firmware(kind)", "kargs(*args)"):
        result.stdout.fnmatch_lines([f"@pytest.mark.{signature}: *"])
