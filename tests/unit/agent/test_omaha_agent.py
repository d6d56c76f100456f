"""The default image's update agent, run on the host against the real Omaha server and a fake slot tool: an
update's course across boots (install, reboot, trial, fallback, rollback), checks, configuration, the
request it sends and the service."""

import hashlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from harness.omaha_protocol import ERROR_ROLLBACK, RAILYARD_APP_ID
from images.agent.railyard_agent.commands import cmd_rollback
from images.agent.railyard_agent.config import read_config
from images.agent.railyard_agent.protocol import Report, build_request
from images.tree import AGENT_DIR
from tests.unit.agent.guest import MACHINE_ID, event_codes, publish, slot_status

AGENT = AGENT_DIR / "launcher.py"  # installed in the image as /usr/lib/railyard/update-agent

pytestmark = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)"
)


def test_good_update_installs_once_and_reports(guest, server, payload, keys):
    publish(server, payload, keys)
    assert guest.agent.check() == "updated"
    assert guest.calls("install") == [f"install {guest.root}/state/{'payload.partial'}"]
    assert guest.installed_sha256() == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert event_codes(server) == [(13, 1, None), (14, 1, None), (3, 1, None)]
    assert all(e.version == "1.0.0" and e.track == "stable" for e in server.events)
    status = guest.status()
    assert status["CURRENT_OP"] == "UPDATE_STATUS_UPDATED_NEED_REBOOT"
    assert status["NEW_VERSION"] == "1.1.0"
    assert status["LAST_ERROR"] == ""
    assert int(status["LAST_CHECKED_TIME"]) > 0
    assert guest.downloads_left() == []
    # Until the reboot, further checks only ping.
    assert guest.agent.check(interactive=True) == "need-reboot"
    assert len(guest.calls("install")) == 1
    assert len(server.events) == 3


def test_reboot_into_the_update_is_reported_with_previous_version(guest, server, payload, keys):
    publish(server, payload, keys)
    assert guest.agent.check() == "updated"
    guest.new_boot()
    guest.set_version("1.1.0")
    guest.set_slots(slot_status(booted="USR-B", b_version="1.1.0"))
    assert guest.agent.check(interactive=True) == "noupdate"
    last = server.events[-1]
    assert last.is_rebooted_into_update
    assert (last.version, last.previous_version) == ("1.1.0", "1.0.0")
    assert guest.calls("mark-good") == []
    assert guest.agent.reconcile(guest.agent.config()) is False
    assert len(server.events) == 4


def test_trial_boot_is_blessed_only_after_boot_complete(guest, server, payload, keys):
    publish(server, payload, keys)
    guest.agent.check()
    guest.new_boot()
    guest.set_version("1.1.0")
    guest.set_slots(
        slot_status(booted="USR-B", on_trial="yes", b="bad", b_entry="usr-b+0-1.conf", b_version="1.1.0")
    )
    guest.boot_complete.unlink()
    assert guest.agent.reconcile(guest.agent.config()) is True  # waiting for boot-complete.target
    assert guest.calls("mark-good") == []
    assert not server.events[-1].is_rebooted_into_update
    # Nothing may overwrite the fallback slot meanwhile, even with a newer version published.
    publish(server, payload, keys, version="1.2.0")
    assert guest.agent.check(interactive=True) == "waiting"
    assert len(guest.calls("install")) == 1
    guest.boot_complete.write_text("")
    assert guest.agent.reconcile(guest.agent.config()) is False
    assert guest.calls("mark-good") == ["mark-good"]
    assert server.events[-1].is_rebooted_into_update


def test_fallback_after_a_failed_trial_is_reported_once(guest, server, payload, keys):
    publish(server, payload, keys)
    guest.agent.check()
    guest.new_boot()  # the trial failed: back on 1.0.0 from USR-A
    guest.set_slots(slot_status(b="bad", b_entry="usr-b+0-1.conf", b_version="1.1.0"))
    assert guest.agent.reconcile(guest.agent.config()) is False
    assert guest.agent.reconcile(guest.agent.config()) is False
    rollbacks = [e for e in server.events if e.is_rollback]
    assert len(rollbacks) == 1
    assert (rollbacks[0].version, rollbacks[0].error_code, rollbacks[0].previous_version) == (
        "1.0.0",
        ERROR_ROLLBACK,
        "1.1.0",
    )
    # Scheduled checks leave the failed version alone; an explicit check-now installs it again.
    assert guest.agent.check() == "noupdate"
    assert len(guest.calls("install")) == 1
    assert guest.agent.check(interactive=True) == "updated"
    assert len(guest.calls("install")) == 2


def test_failed_trial_seen_only_in_slot_status_is_reported_once(guest, server):
    guest.set_slots(slot_status(b="bad", b_entry="usr-b+0-1.conf", b_version="1.2.0"))
    assert guest.agent.check() == "noupdate"
    assert guest.agent.check() == "noupdate"
    (rollback,) = [e for e in server.events if e.is_rollback]
    assert rollback.previous_version == "1.2.0"


def test_reports_wait_for_the_server(guest, server, payload, keys):
    publish(server, payload, keys)
    guest.agent.check()
    guest.new_boot()
    guest.set_version("1.1.0")
    guest.set_slots(slot_status(booted="USR-B", b_version="1.1.0"))
    guest.configure(SERVER="http://127.0.0.1:9/v1/update/", SIGNING_KEY="/nonexistent")
    assert guest.agent.reconcile(guest.agent.config()) is True
    guest.configure(SERVER=server.url, GROUP="stable")
    assert guest.agent.reconcile(guest.agent.config()) is False
    assert server.events[-1].is_rebooted_into_update


def test_manual_rollback_holds_the_version_back_from_scheduled_checks(guest, server, payload, keys):
    publish(server, payload, keys)
    guest.agent.check()
    guest.new_boot()
    guest.set_version("1.1.0")
    guest.set_slots(slot_status(booted="USR-B", b_version="1.1.0"))
    assert guest.agent.check() == "noupdate"
    assert cmd_rollback(guest.paths) == 0
    assert guest.calls("rollback") == ["rollback"]
    guest.new_boot()
    guest.set_version("1.0.0")
    guest.set_slots(slot_status(booted="USR-A", b_version="1.1.0"))
    assert guest.agent.check() == "noupdate"
    assert not any(e.is_rollback for e in server.events)  # a rollback asked for is not a failure
    assert guest.agent.check(interactive=True) == "updated"


def test_no_update_when_current_or_other_track(guest, server, payload, keys):
    publish(server, payload, keys, version="1.0.0")
    server.publish(RAILYARD_APP_ID, "beta", "2.0.0", payload)
    assert guest.agent.check() == "noupdate"
    assert guest.status()["CURRENT_OP"] == "UPDATE_STATUS_IDLE"
    assert server.events == []
    assert server.requests[-1].updatechecks == ((RAILYARD_APP_ID, "1.0.0", "stable", "noupdate"),)
    assert server.requests[-1].machine_ids == (MACHINE_ID,)


def test_disabled_agent_does_not_call_out(guest, server):
    guest.configure(SERVER="disabled")
    assert guest.agent.check(interactive=True) == "disabled"
    assert guest.status()["CURRENT_OP"] == "UPDATE_STATUS_DISABLED"
    assert server.requests == []


def test_unknown_app_or_unreachable_server_fails_the_check(guest, server):
    guest.configure(SERVER=server.url, APP_ID="{00000000-0000-0000-0000-000000000001}")
    assert guest.agent.check() == "check-failed"
    assert "error-unknownApplication" in guest.status()["LAST_ERROR"]
    guest.configure(SERVER="http://127.0.0.1:9/v1/update/")
    assert guest.agent.check() == "check-failed"
    assert "cannot reach" in guest.status()["LAST_ERROR"]


def test_config_layers_and_defaults(tmp_path):
    usr = tmp_path / "usr.conf"
    etc = tmp_path / "etc.conf"
    usr.write_text("SERVER=disabled\nGROUP=stable\nINTERVAL=600\n# comment\n")
    etc.write_text('SERVER="http://10.0.2.2:1234/v1/update/"\nGROUP=beta\n')
    config = read_config([usr, etc, tmp_path / "missing.conf"])
    assert (config.server, config.group, config.interval) == (
        "http://10.0.2.2:1234/v1/update/",
        "beta",
        600.0,
    )
    assert config.app_id == RAILYARD_APP_ID
    assert not config.disabled
    assert read_config([usr]).disabled


def test_request_is_what_the_server_parses(guest):
    from harness.omaha_protocol import parse_request

    config = guest.agent.config()
    who = guest.agent.identity()
    body = build_request(
        config,
        who,
        updatecheck=True,
        ping=True,
        report=Report(3, 0, 44, "1.1.0"),
    )
    (app,) = parse_request(body).apps
    assert (app.app_id, app.version, app.track, app.machine_id) == (
        RAILYARD_APP_ID,
        "1.0.0",
        "stable",
        MACHINE_ID,
    )
    assert app.updatecheck
    assert app.ping
    assert app.events[0].is_rollback


def test_service_loop_and_client(guest, server, payload, keys):
    """`run` in a subprocess; `check-now --wait` signals it and returns the status of the cycle.

    The subprocess reads the host's os-release, machine id and boot id, hence the high version.
    """
    publish(server, payload, keys, version="99999.0.0")
    common = [
        sys.executable,
        str(AGENT),
        "--state-dir",
        str(guest.root / "state"),
        "--run-dir",
        str(guest.root / "run"),
        "--config",
        str(guest.root / "etc/update.conf"),
        "--slot-tool",
        str(guest.root / "slot/railyard-slot"),
    ]
    agent = subprocess.Popen([*common, "run"], stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 30
        while not (guest.root / "run/update-agent.pid").exists():
            assert agent.poll() is None, agent.stderr.read()
            assert time.monotonic() < deadline
            time.sleep(0.05)
        status = subprocess.run([*common, "status"], capture_output=True, text=True, check=True).stdout
        assert "CURRENT_OP=UPDATE_STATUS_IDLE" in status
        done = subprocess.run(
            [*common, "check-now", "--wait", "--timeout", "60"], capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, done.stderr
        assert "CURRENT_OP=UPDATE_STATUS_UPDATED_NEED_REBOOT" in done.stdout
        assert len(guest.calls("install")) == 1
        assert [e.event_type for e in server.events] == [13, 14, 3]
        assert subprocess.run([*common, "rollback"], check=False).returncode == 0
        assert guest.calls("rollback") == ["rollback"]
    finally:
        agent.send_signal(signal.SIGTERM)
        assert agent.wait(10) == 0
    assert not (guest.root / "run/update-agent.pid").exists()
    missing = subprocess.run([*common, "check-now"], capture_output=True, text=True, check=False)
    assert missing.returncode == 1
    assert "not running" in missing.stderr
