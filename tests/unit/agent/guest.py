"""A pretend machine in a directory, for running the default image's update agent on the host: its files, a
fake slot tool that records its calls, and helpers to publish a payload and read the events the server got."""

import os
import sys
import textwrap
from pathlib import Path

from harness.omaha import OmahaServer
from harness.omaha_protocol import RAILYARD_APP_ID
from harness.update_signing import sign_payload
from images.agent.railyard_agent.agent import Agent
from images.agent.railyard_agent.config import AgentPaths, parse_key_values

MACHINE_ID = "5eb1e5b0c0de4c0ffee0123456789abc"

FAKE_SLOT_TOOL = textwrap.dedent(
    """\
    #!{python}
    import hashlib, pathlib, subprocess, sys
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
        if data[:4] == b"\\x28\\xb5\\x2f\\xfd":  # a zstd file: the real tool decompresses it into the slot
            data = subprocess.run(["zstd", "-q", "-d", "-c", source], capture_output=True, check=True).stdout
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


def publish(server, payload, keys, version="1.1.0", **kwargs):
    kwargs.setdefault("signature", sign_payload(payload, keys[0]))
    return server.publish(RAILYARD_APP_ID, "stable", version, payload, **kwargs)


def event_codes(server):
    return [(e.event_type, e.event_result, e.error_code) for e in server.events_for(MACHINE_ID)]
