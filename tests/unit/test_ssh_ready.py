"""The image's ssh-ready script: the console's "ready for SSH" line once a link is routable, and never a failure."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

from images.tree import OVERLAY_DIR, OVERLAY_MODES

SCRIPT = OVERLAY_DIR / "usr/lib/railyard/ssh-ready"
UNIT = OVERLAY_DIR / "usr/lib/systemd/system/railyard-ssh-ready.service"
TRIGGER_DROPIN = OVERLAY_DIR / "usr/lib/systemd/system/systemd-udev-trigger.service.d/railyard-net-first.conf"
LINE = "railyard: ready for SSH\n"

# What systemd-networkd writes to /run/systemd/netif/state (systemd 252), by overall state.
ROUTABLE = "OPER_STATE=routable\nCARRIER_STATE=carrier\nADDRESS_STATE=routable\nONLINE_STATE=online\n"
NO_ADDRESS = "OPER_STATE=carrier\nCARRIER_STATE=carrier\nADDRESS_STATE=off\nONLINE_STATE=offline\n"


def start(tmp_path: Path, polls: int = 100) -> subprocess.Popen[str]:
    env = {
        "PATH": "/usr/bin:/bin",
        "RAILYARD_NETIF_STATE": str(tmp_path / "state"),
        "RAILYARD_CONSOLE": str(tmp_path / "console"),
        "RAILYARD_READY_POLLS": str(polls),
    }
    (tmp_path / "console").write_text("")
    return subprocess.Popen(["sh", str(SCRIPT)], env=env, text=True, stderr=subprocess.PIPE)


def finish(process: subprocess.Popen[str]) -> None:
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 0
    assert stderr == ""


def test_the_unit_runs_the_installed_script():
    assert OVERLAY_MODES["usr/lib/railyard/ssh-ready"] == 0o755
    starts = [line for line in UNIT.read_text().splitlines() if line.startswith("ExecStart=")]
    assert starts == ["ExecStart=/usr/lib/railyard/ssh-ready"]


def test_a_routable_link_prints_the_line_at_once(tmp_path):
    (tmp_path / "state").write_text(ROUTABLE)
    begun = time.monotonic()
    finish(start(tmp_path))
    assert (tmp_path / "console").read_text() == LINE
    assert time.monotonic() - begun < 5


def test_the_line_waits_for_the_lease(tmp_path):
    (tmp_path / "state").write_text(NO_ADDRESS)
    process = start(tmp_path)
    time.sleep(0.5)  # the script polls meanwhile; it must not have printed without a routable link
    assert process.poll() is None
    assert (tmp_path / "console").read_text() == ""
    (tmp_path / "state.new").write_text(ROUTABLE)
    (tmp_path / "state.new").rename(tmp_path / "state")  # networkd replaces the file as a whole
    finish(process)
    assert (tmp_path / "console").read_text() == LINE


def test_no_state_file_and_no_lease_print_nothing_and_do_not_fail(tmp_path):
    finish(start(tmp_path, polls=3))
    (tmp_path / "state").write_text(NO_ADDRESS)
    finish(start(tmp_path, polls=3))
    assert (tmp_path / "console").read_text() == ""


def test_the_coldplug_queues_network_devices_first_and_keeps_debians_other_subsystems():
    lines = TRIGGER_DROPIN.read_text().splitlines()
    starts = [line for line in lines if line.startswith("ExecStart=")]
    assert starts[0] == "ExecStart="  # replaces Debian's command rather than adding a second one
    assert len(starts) == 2
    words = starts[1].split()
    assert words[:2] == ["ExecStart=-udevadm", "trigger"]
    assert "--type=all" in words
    assert "--action=add" in words
    [prioritized] = [w.split("=", 1)[1] for w in words if w.startswith("--prioritized-subsystem=")]
    subsystems = prioritized.split(",")
    assert subsystems[0] == "net"
    # Debian 12's list (systemd 252): module,block,tpmrm,net,tty,input; only the order changes.
    assert sorted(subsystems) == sorted(["module", "block", "tpmrm", "net", "tty", "input"])
