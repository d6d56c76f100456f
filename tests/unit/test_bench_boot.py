import gzip
import io
import json
import lzma

import pytest

from bench.boot import Summary, render
from bench.boot_phases import (
    AFTER_IGNITION,
    BOOT_PHASES,
    FIRMWARE,
    IGNITION,
    INITRD,
    KERNEL,
    REBOOT_PHASES,
    SHUTDOWN,
    SSHD,
    USERSPACE,
    BootRecord,
    ConsoleMarks,
    Phases,
    UnitTimes,
    boot_phases,
    console_marks,
    ignition_span,
    lines_between,
    median,
    median_phases,
    parse_analyze,
    parse_blame,
    parse_critical_chain,
    parse_duration,
    parse_unit_jobs,
    plain,
    qmp_reset,
)
from bench.boot_run import BootMeasure, RunResult, parse_uptime
from bench.console_tail import StampedLine
from bench.plain_boot import newc_archive, unpack_kernel

ANALYZE = (
    "Startup finished in 3.213s (firmware) + 1.052s (loader) + 2.617s (kernel) + 14.104s (initrd)"
    " + 21.355s (userspace) = 42.343s \ngraphical.target reached after 21.290s in userspace\n"
)

BLAME = """\
          5.003s ssh.service
   1min 2.100s slow.service
           812ms systemd-journal-flush.service
            41us tmp.mount
"""

CHAIN = """\
The time when unit became active or started is printed after the "@" character.
The time the unit took to start is printed after the "+" character.

graphical.target @21.290s
\u2514\u2500multi-user.target @21.288s
  \u2514\u2500ssh.service @16.270s +5.003s
    \u2514\u2500network.target @16.200s
      \u2514\u2500systemd-networkd.service @1min 4.1s +2.5s
"""


def _job(unit, usec, result=None):
    entry = {"UNIT": unit, "JOB_TYPE": "start", "__MONOTONIC_TIMESTAMP": str(usec), "_BOOT_ID": "x"}
    if result:
        entry["JOB_RESULT"] = result
    return json.dumps(entry)


JOURNAL = "\n".join(
    [
        _job("ignition-fetch.service", 5_000_000),
        _job("ignition-fetch.service", 6_000_000, "done"),
        _job("ignition-files.service", 7_000_000),
        _job("ignition-files.service", 9_500_000, "done"),
        _job("ignition-complete.target", 9_600_000, "done"),
        _job("multi-user.target", 30_000_000, "done"),
        _job("multi-user.target", 31_000_000, "done"),
        json.dumps({"MESSAGE": "no unit", "__MONOTONIC_TIMESTAMP": "1"}),
        json.dumps({"UNIT": "x.service", "JOB_TYPE": "stop", "__MONOTONIC_TIMESTAMP": "1"}),
        "not json",
    ]
)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("1.5s", 1.5), ("876ms", 0.876), ("12us", 12e-6), ("1min 2.5s", 62.5), ("2h 1min", 7260.0)],
)
def test_parse_duration(text, seconds):
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "1.5s later", "3 s"])
def test_parse_duration_rejects_other_text(text):
    with pytest.raises(ValueError, match="time span"):
        parse_duration(text)


def test_parse_analyze():
    times = parse_analyze(ANALYZE)
    assert times.parts == pytest.approx(
        {"firmware": 3.213, "loader": 1.052, "kernel": 2.617, "initrd": 14.104, "userspace": 21.355}
    )
    assert times.total == pytest.approx(42.343)
    assert times.target == "graphical.target"
    assert times.target_after == pytest.approx(21.29)


def test_parse_analyze_without_firmware_times_and_with_minutes():
    times = parse_analyze(
        "Startup finished in 2.6s (kernel) + 1min 4.104s (initrd) + 800ms (userspace) = 1min 7.5s"
    )
    assert times.parts == pytest.approx({"kernel": 2.6, "initrd": 64.104, "userspace": 0.8})
    assert times.get("firmware") is None
    assert times.total == pytest.approx(67.5)
    assert times.target is None


def test_parse_analyze_of_an_unfinished_boot():
    with pytest.raises(ValueError, match="no startup time"):
        parse_analyze(
            "Bootup is not yet finished (org.freedesktop.systemd1.Manager.FinishTimestampMonotonic=0)."
        )


def test_parse_blame_sorts_slowest_first():
    assert parse_blame(BLAME, top=3) == [
        ("slow.service", pytest.approx(62.1)),
        ("ssh.service", pytest.approx(5.003)),
        ("systemd-journal-flush.service", pytest.approx(0.812)),
    ]


def test_parse_critical_chain():
    links = parse_critical_chain(CHAIN)
    assert [x.unit for x in links] == [
        "graphical.target",
        "multi-user.target",
        "ssh.service",
        "network.target",
        "systemd-networkd.service",
    ]
    assert links[2].at == pytest.approx(16.27)
    assert links[2].took == pytest.approx(5.003)
    assert links[1].took is None
    assert links[4].at == pytest.approx(64.1)


def test_parse_unit_jobs_keeps_the_first_start_and_end():
    units = parse_unit_jobs(JOURNAL)
    assert units["ignition-fetch.service"] == UnitTimes(5.0, 6.0)
    assert units["multi-user.target"] == UnitTimes(None, 30.0)
    assert "x.service" not in units


def test_ignition_span_covers_the_ignition_services_only():
    assert ignition_span(parse_unit_jobs(JOURNAL)) == (5.0, 9.5)
    assert ignition_span({"ignition-fetch.service": UnitTimes(5.0, None)}) is None
    assert ignition_span({"ignition-mount.service": UnitTimes(None, 4.0)}) == (4.0, 4.0)


def _lines(*pairs):
    return [StampedLine(at, text) for at, text in pairs]


def test_console_marks_and_plain_text():
    lines = _lines(
        (100.0, "\x1b[0;1;31mFailed to unmount /usr: Device or resource busy\x1b[0m"),
        (140.0, "[  90.1] reboot: Restarting system"),
        (143.0, 'BdsDxe: loading Boot0001 "UEFI Misc Device"'),
        (143.5, 'BdsDxe: starting Boot0001 "UEFI Misc Device" from PciRoot(0x0)'),
        (150.0, "reboot: Restarting system"),
    )
    assert console_marks(lines) == ConsoleMarks(restart=140.0, loader=143.5)
    assert console_marks([]) == ConsoleMarks()
    assert plain(lines[0].text) == "Failed to unmount /usr: Device or resource busy"
    assert lines_between(lines, 90.0, 140.0) == [
        (10.0, "Failed to unmount /usr: Device or resource busy"),
        (50.0, "[  90.1] reboot: Restarting system"),
    ]


def _record(**changes):
    fields = {
        "start": 1000.0,
        "login": 1060.0,
        "clock_offset": 1010.0,  # kernel started 10 s after the start
        "console": ConsoleMarks(restart=None, loader=1004.0),
        "analyze": parse_analyze(
            "Startup finished in 2s (firmware) + 1s (loader) + 3s (kernel) + 12s (initrd) + 20s (userspace) = 38s"
        ),
        "units": parse_unit_jobs(JOURNAL),
        "reboot": False,
    }
    fields.update(changes)
    return BootRecord(**fields)


def test_first_boot_phases_are_contiguous_and_add_up():
    phases = boot_phases(_record())
    assert list(phases.seconds) == list(BOOT_PHASES)
    assert phases.seconds == pytest.approx(
        {
            FIRMWARE: 10.0,
            KERNEL: 3.0,
            INITRD: 2.0,
            IGNITION: 4.5,
            AFTER_IGNITION: 5.5,
            USERSPACE: 15.0,
            SSHD: 20.0,
        }
    )
    assert phases.total() == pytest.approx(60.0)
    assert phases.notes == []


def test_a_boot_loader_without_timestamps_is_said():
    analyze = parse_analyze("Startup finished in 3s (kernel) + 12s (initrd) + 20s (userspace) = 35s")
    phases = boot_phases(_record(analyze=analyze))
    assert phases.seconds[FIRMWARE] == pytest.approx(10.0)
    assert any("systemd-boot does not time in a VM" in note for note in phases.notes)


def test_reboot_phases_start_with_the_shutdown():
    units = {"multi-user.target": UnitTimes(None, 30.0)}
    record = _record(console=ConsoleMarks(restart=1004.0), units=units, reboot=True)
    phases = boot_phases(record)
    assert list(phases.seconds) == list(REBOOT_PHASES)
    assert phases.seconds[SHUTDOWN] == pytest.approx(4.0)
    assert phases.seconds[FIRMWARE] == pytest.approx(6.0)
    assert phases.seconds[INITRD] == pytest.approx(12.0)
    assert phases.seconds[IGNITION] == 0.0
    assert phases.seconds[AFTER_IGNITION] == 0.0
    assert phases.total() == pytest.approx(60.0)
    assert any("Ignition did not run" in note for note in phases.notes)


def test_unseen_boundaries_leave_phases_open_and_say_why():
    record = _record(console=ConsoleMarks(), units={}, analyze=None, reboot=True)
    phases = boot_phases(record)
    assert phases.seconds[SHUTDOWN] is None
    assert phases.seconds[FIRMWARE] is None
    assert phases.seconds[KERNEL] is None
    assert phases.seconds[SSHD] is None
    assert phases.total() is None
    text = " ".join(phases.notes)
    assert "Restarting system" in text
    assert "systemd-analyze" in text
    assert "multi-user.target" in text


def test_a_login_before_multi_user_is_said():
    units = {**parse_unit_jobs(JOURNAL), "multi-user.target": UnitTimes(None, 55.0)}
    phases = boot_phases(_record(units=units))
    assert phases.seconds[SSHD] == pytest.approx(-5.0)
    assert any("before multi-user.target" in note for note in phases.notes)


def test_first_boot_without_ignition_in_the_journal():
    phases = boot_phases(_record(units={}))
    assert phases.seconds[IGNITION] is None
    assert any("no Ignition unit" in note for note in phases.notes)


def test_medians():
    assert median([]) is None
    assert median([3.0, 1.0, 2.0]) == 2.0
    assert median([4.0, 1.0]) == 2.5
    runs = [Phases({"a": 1.0, "b": None}), Phases({"a": 3.0, "b": None}), Phases({"a": 2.0, "b": 5.0})]
    assert median_phases(runs, ["a", "b", "c"]) == {"a": 2.0, "b": 5.0, "c": None}


def test_parse_uptime():
    assert parse_uptime("35.21 60.02\n") == pytest.approx(35.21)


def test_newc_archive_layout():
    archive = newc_archive([("init", 0o100755, b"abc")])
    assert archive.startswith(b"070701")
    assert b"init\0" in archive
    assert b"TRAILER!!!\0" in archive
    assert len(archive) % 4 == 0


ELF = b"\x7fELF" + bytes(range(256)) * 64


@pytest.mark.parametrize(
    ("name", "pack"),
    [("xz", lambda data: lzma.compress(data, format=lzma.FORMAT_XZ)), ("gzip", gzip.compress)],
)
def test_the_kernel_is_taken_out_of_its_bzimage(tmp_path, name, pack):
    # A bzImage: setup code, the packed kernel, then the decompressor's trailer (bytes that are no stream).
    bzimage = tmp_path / "vmlinuz"
    bzimage.write_bytes(b"MZ" + bytes(500) + b"\xfd7zXZ" + pack(ELF) + b"\x00\x10trailer" * 8)
    packing, vmlinux = unpack_kernel(bzimage, tmp_path)
    assert packing == name
    assert vmlinux is not None
    assert vmlinux.read_bytes() == ELF


def test_a_kernel_packed_otherwise_is_not_unpacked(tmp_path):
    bzimage = tmp_path / "vmlinuz"
    bzimage.write_bytes(b"MZ" + bytes(500) + b"\x28\xb5\x2f\xfd" + bytes(64))  # zstd: not read here
    assert unpack_kernel(bzimage, tmp_path) == ("other", None)
    assert not (tmp_path / "vmlinux").exists()


def _measure(seconds, reboot):
    phases = boot_phases(_record(reboot=reboot, console=ConsoleMarks(restart=1004.0)))
    return BootMeasure(seconds, phases, None, [("ssh.service", 5.0)], [], [(2.0, "Failed to unmount /usr")])


def test_summary_json_and_table():
    runs = [RunResult(_measure(s, False), [_measure(s + 40, True)], None) for s in (50.0, 60.0, 55.0)]
    runs[0].reboots[0].phases.notes.append(
        "harness: no firmware output 92 s after the restart; power-cycled it"
    )
    summary = Summary("tcg", [6.0, 7.0, 6.5], runs, "not measured (no checkpoints)", cpus=1)
    data = summary.to_json()
    assert data["cpus"] == 1
    assert data["first_boot_s"] == 55.0
    assert data["reboot_s"] == 95.0
    assert data["plain_kernel_s"] == 6.5
    assert data["restore_s"] is None
    assert data["firstboot_restore_s"] is None
    assert data["runs"] == 3
    assert data["reboots"] == 3
    assert data["acceleration"] == "tcg"
    assert set(data["reboot_phases"]) == set(REBOOT_PHASES)
    assert set(data["first_boot_phases"]) == set(BOOT_PHASES)
    json.dumps(data)
    out = io.StringIO()
    render(summary, out)
    text = out.getvalue()
    assert "acceleration: tcg, 1 vCPU, median of 3 runs" in text
    assert "ratio  8.46  target <= 40 s" in text
    assert "not measured (no checkpoints)" in text
    assert "not measured (the image cannot wait for a first-boot checkpoint)" in text
    assert "Failed to unmount /usr" in text
    assert "harness: no firmware output 92 s" in text
    assert data["kernel_decompression_s"] is None  # no unpacked plain boot measured
    assert "unpacked from its bzImage" not in text


def test_the_kernels_own_decompression_is_the_plain_boots_difference():
    summary = Summary("tcg", [6.0, 7.0, 6.5], [], None, [3.0, 3.25, 3.5], "xz")
    data = summary.to_json()
    assert data["plain_kernel_uncompressed_s"] == 3.25
    assert data["kernel_decompression_s"] == pytest.approx(3.25)
    assert data["kernel_compression"] == "xz"
    out = io.StringIO()
    render(summary, out)
    assert "xz decompression costs 3.2 s of every boot" in out.getvalue()


def test_qmp_reset_instant_on_the_monotonic_clock():
    events = [
        {"event": "RESET", "timestamp": {"seconds": 1_700_000_090, "microseconds": 500_000}},
        {"event": "STOP", "timestamp": {"seconds": 1_700_000_100, "microseconds": 0}},
        {"event": "RESET", "timestamp": {"seconds": 1_700_000_140, "microseconds": 250_000}},
        {"event": "RESET"},
    ]
    wall_minus_monotonic = 1_700_000_000.0
    assert qmp_reset(events, 100.0, wall_minus_monotonic) == pytest.approx(140.25)
    assert qmp_reset(events, 50.0, wall_minus_monotonic) == pytest.approx(90.5)
    assert qmp_reset(events, 200.0, wall_minus_monotonic) is None


def test_a_reset_ends_the_shutdown_when_the_console_did_not_say():
    record = _record(console=ConsoleMarks(), reset=1005.0, reboot=True)
    phases = boot_phases(record)
    assert phases.seconds[SHUTDOWN] == pytest.approx(5.0)
    assert phases.seconds[FIRMWARE] == pytest.approx(5.0)
    assert any("QEMU's reset" in note for note in phases.notes)


def test_summary_with_first_boot_restores():
    runs = [RunResult(_measure(s, False), [], 1.5, s * 0.4) for s in (50.0, 60.0, 55.0)]
    summary = Summary("tcg", [], runs, None)
    data = summary.to_json()
    assert data["firstboot_restore_s"] == 22.0
    assert data["targets"]["firstboot_restore_s"] == 27.5
    assert data["notes"]["firstboot_restore_s"] is None
    assert [run["firstboot_restore_s"] for run in data["per_run"]] == [20.0, 24.0, 22.0]
    out = io.StringIO()
    render(summary, out)
    assert "36.7x faster than a cold first boot" in out.getvalue()
    assert "22.0 s  0.40 of a cold first boot  target <= 27.5 s" in out.getvalue()
