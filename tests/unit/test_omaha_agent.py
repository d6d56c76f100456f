"""The default image's update agent, run on the host against the real Omaha server and a fake slot tool."""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from harness.omaha import OmahaServer
from harness.omaha_protocol import (
    ERROR_INSTALL,
    ERROR_PAYLOAD_HASH_MISMATCH,
    ERROR_PAYLOAD_SIZE_MISMATCH,
    ERROR_PAYLOAD_VERIFICATION,
    ERROR_ROLLBACK,
    RAILYARD_APP_ID,
)
from harness.update_signing import generate_signing_key, sign_payload
from images.agent.railyard_agent.agent import Agent
from images.agent.railyard_agent.commands import cmd_rollback
from images.agent.railyard_agent.config import AgentPaths, parse_key_values, read_config
from images.agent.railyard_agent.payload import allowed_signers
from images.agent.railyard_agent.protocol import Report, build_request
from images.agent.railyard_agent.sparse import SparseWriter
from images.tree import AGENT_DIR

AGENT = AGENT_DIR / "launcher.py"  # installed in the image as /usr/lib/railyard/update-agent
MACHINE_ID = "5eb1e5b0c0de4c0ffee0123456789abc"

pytestmark = pytest.mark.skipif(
    shutil.which("ssh-keygen") is None, reason="needs ssh-keygen (openssh-client)"
)


FAKE_SLOT_TOOL = textwrap.dedent(
    """\
    #!{python}
    import hashlib, pathlib, sys
    home = pathlib.Path(__file__).parent
    with open(home / "calls.log", "a") as log:
        log.write(" ".join(sys.argv[1:]) + "\\n")
    command = sys.argv[1]
    if command == "status":
        sys.stdout.write((home / "status.txt").read_text())
    elif command == "install":
        if (home / "fail-install").exists():
            sys.exit("railyard-slot: writing USR-B failed")
        source = sys.argv[2]
        data = sys.stdin.buffer.read() if source == "-" else pathlib.Path(source).read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        (home / "installed.txt").write_text(digest)
        print("railyard-slot: installed into USR-B; the next boot tries it once")
    elif command in ("mark-good", "rollback"):
        pass
    else:
        sys.exit(2)
    """
)


def slot_status(booted="USR-A", on_trial="no", a="good", b="good", b_entry="usr-b.conf", b_version="1.0.0"):
    return (
        f"booted={booted}\nbooted_version=x\nbooted_on_trial={on_trial}\nnext={booted}\ndefault={booted}\n"
        f"trial_pending=no\nslot_a_version=1.0.0\nslot_a_entry=usr-a.conf\nslot_a_state={a}\n"
        f"slot_b_version={b_version}\nslot_b_entry={b_entry}\nslot_b_state={b}\n"
    )


class Guest:
    """A pretend machine in a directory: os-release, ids, config, state, and the fake slot tool."""

    def __init__(self, root: Path, server: OmahaServer, allowed_signers: str):
        self.root = root
        for sub in ("etc", "state", "run", "slot"):
            (root / sub).mkdir(parents=True)
        self.set_version("1.0.0")
        (root / "etc/machine-id").write_text(MACHINE_ID + "\n")
        self.new_boot()
        (root / "etc/update-signing.pub").write_text(allowed_signers + "\n")
        self.configure(SERVER=server.url, GROUP="stable", SIGNING_KEY=str(root / "etc/update-signing.pub"))
        tool = root / "slot/railyard-slot"
        tool.write_text(FAKE_SLOT_TOOL.format(python=sys.executable))
        tool.chmod(0o755)
        self.set_slots(slot_status())
        self.boot_complete = root / "boot-complete"
        self.boot_complete.write_text("")
        self.paths = AgentPaths(
            config_files=(root / "etc/update.conf",),
            state_dir=root / "state",
            run_dir=root / "run",
            os_release=root / "etc/os-release",
            machine_id=root / "etc/machine-id",
            boot_id=root / "etc/boot_id",
            slot_tool=(str(tool),),
            boot_complete=("test", "-e", str(self.boot_complete)),
        )
        self.agent = Agent(self.paths)

    def configure(self, **values):
        (self.root / "etc/update.conf").write_text("".join(f"{k}={v}\n" for k, v in values.items()))

    def set_version(self, version):
        (self.root / "etc/os-release").write_text(f'ID=railyard\nVERSION_ID="{version}"\n')

    def new_boot(self):
        (self.root / "etc/boot_id").write_text(f"{os.urandom(16).hex()}\n")

    def set_slots(self, text):
        (self.root / "slot/status.txt").write_text(text)

    def calls(self, command=None):
        log = self.root / "slot/calls.log"
        lines = log.read_text().splitlines() if log.exists() else []
        return [line for line in lines if command is None or line.split()[0] == command]

    def installed_sha256(self):
        path = self.root / "slot/installed.txt"
        return path.read_text() if path.exists() else None

    def status(self):
        return parse_key_values((self.root / "run/update-status").read_text())

    def downloads_left(self):
        return sorted(p.name for p in (self.root / "state").glob("payload*"))


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    return generate_signing_key(tmp_path_factory.mktemp("keys"))


@pytest.fixture
def server():
    with OmahaServer() as omaha:
        yield omaha


@pytest.fixture
def guest(tmp_path, server, keys):
    return Guest(tmp_path / "guest", server, keys[1])


@pytest.fixture
def payload(tmp_path):
    path = tmp_path / "usr-1.1.0.img"
    path.write_bytes(os.urandom(300_000))
    return path


def publish(server, payload, keys, version="1.1.0", **kwargs):
    kwargs.setdefault("signature", sign_payload(payload, keys[0]))
    return server.publish(RAILYARD_APP_ID, "stable", version, payload, **kwargs)


def event_codes(server):
    return [(e.event_type, e.event_result, e.error_code) for e in server.events_for(MACHINE_ID)]


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


@pytest.mark.parametrize(
    ("publish_kwargs", "code"),
    [
        ({"override_sha256": "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="}, ERROR_PAYLOAD_HASH_MISMATCH),
        ({"override_sha1": "2jmj7l5rSw0yVb/vlWAYkK/YBwk="}, ERROR_PAYLOAD_HASH_MISMATCH),
        ({"override_size": 300_001}, ERROR_PAYLOAD_SIZE_MISMATCH),  # truncated: fewer bytes than announced
        ({"override_size": 299_999}, ERROR_PAYLOAD_SIZE_MISMATCH),  # oversized
        ({"signature": None}, ERROR_PAYLOAD_VERIFICATION),
    ],
    ids=["wrong-sha256", "wrong-sha1", "truncated", "oversized", "unsigned"],
)
def test_bad_payload_is_never_installed(guest, server, payload, keys, publish_kwargs, code):
    publish(server, payload, keys, **publish_kwargs)
    assert guest.agent.check() == "failed"
    assert guest.calls("install") == []
    assert event_codes(server) == [(13, 1, None), (3, 0, code)]
    status = guest.status()
    assert status["CURRENT_OP"] == "UPDATE_STATUS_IDLE"
    assert status["LAST_ERROR_CODE"] == str(code)
    assert status["LAST_ERROR"]
    assert guest.downloads_left() == []


def test_missing_signing_key_fails_closed_unless_disabled(guest, server, payload):
    server.publish(RAILYARD_APP_ID, "stable", "1.1.0", payload)
    guest.configure(SERVER=server.url, SIGNING_KEY=str(guest.root / "missing.pub"))
    assert guest.agent.check() == "failed"
    assert event_codes(server)[-1] == (3, 0, ERROR_PAYLOAD_VERIFICATION)
    assert "no signing key" in guest.status()["LAST_ERROR"]
    guest.configure(SERVER=server.url, SIGNING_KEY="none")
    assert guest.agent.check() == "updated"


def test_signature_by_another_key_is_rejected(guest, server, payload, tmp_path):
    other_private, _ = generate_signing_key(tmp_path / "other")
    server.publish(
        RAILYARD_APP_ID, "stable", "1.1.0", payload, signature=sign_payload(payload, other_private)
    )
    assert guest.agent.check() == "failed"
    assert guest.calls("install") == []
    assert event_codes(server)[-1] == (3, 0, ERROR_PAYLOAD_VERIFICATION)


def test_tampered_payload_with_matching_digests_fails_the_signature(guest, server, payload, keys, tmp_path):
    signature = sign_payload(payload, keys[0])
    tampered = tmp_path / "tampered.img"
    tampered.write_bytes(payload.read_bytes()[:-1] + b"X")
    server.publish(RAILYARD_APP_ID, "stable", "1.1.0", tampered, signature=signature)
    assert guest.agent.check() == "failed"
    assert event_codes(server)[-1] == (3, 0, ERROR_PAYLOAD_VERIFICATION)
    assert guest.calls("install") == []


def test_failing_slot_tool_reports_install_error(guest, server, payload, keys):
    publish(server, payload, keys)
    (guest.root / "slot/fail-install").write_text("")
    assert guest.agent.check() == "failed"
    assert event_codes(server) == [(13, 1, None), (14, 1, None), (3, 0, ERROR_INSTALL)]
    assert "writing USR-B failed" in guest.status()["LAST_ERROR"]


def test_interrupted_download_resumes_with_a_range_request(guest, server, payload, keys):
    published = publish(server, payload, keys, interrupt_at=120_000)
    assert guest.agent.check() == "failed"
    assert event_codes(server)[-1] == (3, 0, 9)
    assert (guest.root / "state/payload.partial").stat().st_size == 120_000
    assert guest.calls("install") == []
    assert guest.agent.check(interactive=True) == "updated"
    gets = [d for d in server.downloads if d.path.endswith(published.name)]
    assert [(d.range_header, d.status) for d in gets] == [(None, 200), ("bytes=120000-", 206)]
    assert gets[1].bytes_sent == 300_000 - 120_000
    assert guest.installed_sha256() == hashlib.sha256(payload.read_bytes()).hexdigest()


def test_partial_download_of_another_payload_is_discarded(guest, server, payload, keys):
    (guest.root / "state/payload.partial").write_bytes(b"stale" * 100)
    (guest.root / "state/payload.partial.json").write_text(json.dumps({"url": "x", "sha256": "y", "size": 1}))
    publish(server, payload, keys)
    assert guest.agent.check() == "updated"
    assert [d.range_header for d in server.downloads if not d.path.endswith(".sig")] == [None]


@pytest.mark.parametrize("packer", ["gzip", "xz", "zstd"])
def test_compressed_payload_is_streamed_into_the_slot_tool(guest, server, payload, keys, tmp_path, packer):
    packed = tmp_path / "usr.img.packed"
    packed.write_bytes(subprocess.run([packer, "-c", str(payload)], capture_output=True, check=True).stdout)
    publish(server, packed, keys)
    assert guest.agent.check() == "updated"
    assert guest.calls("install") == ["install -"]  # no unpacked copy in the state directory
    assert guest.installed_sha256() == hashlib.sha256(payload.read_bytes()).hexdigest()
    assert guest.downloads_left() == []


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


def test_bare_public_key_becomes_an_allowed_signers_line():
    text = allowed_signers("# key\nssh-ed25519 AAAAC3Nza comment\n")
    assert text == 'railyard-update namespaces="railyard-update" ssh-ed25519 AAAAC3Nza comment\n'
    line = 'railyard-update namespaces="railyard-update" ssh-ed25519 AAAA'
    assert allowed_signers(line) == line + "\n"


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


def test_downloads_are_written_sparse(tmp_path):
    path = tmp_path / "image"
    with SparseWriter(path, 0) as out:
        out.write(b"a" * 100)
        out.write(bytes(4 << 20))
        out.write(b"b" * 70_000 + bytes(1 << 20))
    assert path.read_bytes() == b"a" * 100 + bytes(4 << 20) + b"b" * 70_000 + bytes(1 << 20)
    assert path.stat().st_blocks * 512 < 2 << 20  # the zero blocks are holes
    with SparseWriter(path, 100) as out:  # resuming cuts off what follows the offset
        out.write(b"c" * 10)
    assert path.read_bytes() == b"a" * 100 + b"c" * 10


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
