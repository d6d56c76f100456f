"""What the harness keeps of each machine: the console and journal checked after every test, and the
artifacts written when a test fails (journal.txt, the boot timeline timeline.svg, the platform's own files)."""

from __future__ import annotations

import logging
import shlex
from collections.abc import Sequence
from dataclasses import dataclass, field

from harness.consolecheck import ConsoleMatch, scan
from harness.disk_journal import read_journal
from harness.errors import RailyardError
from harness.machine import GuestMachine

log = logging.getLogger(__name__)

JOURNAL_TIMEOUT = 120.0
TIMELINE_TIMEOUT = 60.0


@dataclass
class MachineRecord:
    """How far a machine's console and journal have been checked, and the journal read so far."""

    guest: GuestMachine
    ssh: bool = True
    """Whether the harness logs in to the machine (not with the `no_ssh_key` flag)."""
    console_offset: int = 0
    journal_cursor: str | None = None
    journal_parts: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.guest.name

    def check(self, ignore: Sequence[str] = ()) -> list[ConsoleMatch]:
        """Scan what the machine printed and logged since the last check (panics, emergency shells, failed
        units...)."""
        text = self.guest.console_text()
        found = scan(text[self.console_offset :], f"{self.name} console", ignore=ignore)
        self.console_offset = len(text)
        journal = self.fetch_journal()
        if journal:
            found += scan(journal, f"{self.name} journal", ignore=ignore)
        return found

    def fetch_journal(self) -> str:
        """The journal since the last fetch, over SSH ("" when the machine is down or SSH fails)."""
        if not self.ssh or not self.guest.vm.is_running():
            return ""
        after = f" --after-cursor={shlex.quote(self.journal_cursor)}" if self.journal_cursor else ""
        try:
            result = self.guest.execute(
                f"sudo journalctl --no-pager -o short-monotonic --show-cursor{after}", timeout=JOURNAL_TIMEOUT
            )
        except RailyardError as exc:
            log.warning("%s: could not read the journal: %s", self.name, exc)
            return ""
        lines = result.stdout.splitlines()
        if lines and lines[-1].startswith("-- cursor: "):
            self.journal_cursor = lines.pop()[len("-- cursor: ") :]
        text = "\n".join(lines)
        self.journal_parts.append(text)
        return text

    def boot_timeline(self) -> str:
        """The guest's picture of its boot (`systemd-analyze plot`, SVG), or "" when it cannot say (down, no
        SSH, the boot not finished)."""
        if not self.ssh or not self.guest.vm.is_running():
            return ""
        try:
            result = self.guest.execute("systemd-analyze plot", timeout=TIMELINE_TIMEOUT)
        except RailyardError as exc:
            log.debug("%s: no boot timeline: %s", self.name, exc)
            return ""
        return result.stdout if result.status == 0 and "<svg" in result.stdout else ""

    def journal_from_disk(self) -> list[str]:
        """Stop a machine whose journal SSH could not read and read it from its own disk. Returns notes."""
        disk = self.guest.vm.disk_path()
        if disk is None:
            return []
        self.guest.close()
        try:
            self.guest.vm.kill()
            text = read_journal(disk)
        except RailyardError as exc:
            note = f"{self.name}: no journal over SSH, nor from its disk: {exc}"
            log.warning("%s", note)
            return [note]
        self.journal_parts.append(f"-- read from the disk of {self.name} after it stopped --\n{text}")
        return [f"{self.name}: SSH did not answer; its journal was read from its disk into journal.txt"]

    def save(self, failed: bool, keep: bool) -> list[str]:
        """Write the machine's artifacts next to its console; on a failure, read the journal first (from
        the disk when SSH does not answer, unless the machine is kept running). Returns notes."""
        notes: list[str] = []
        if failed and not self.journal_parts:
            self.fetch_journal()
        if failed and not self.journal_parts and not keep:
            notes += self.journal_from_disk()
        workdir = self.guest.vm.spec.workdir
        if failed:
            timeline = self.boot_timeline()
            if timeline:
                (workdir / "timeline.svg").write_text(timeline)
        if self.journal_parts:
            (workdir / "journal.txt").write_text("\n".join(self.journal_parts) + "\n")
        for name, text in self.guest.vm.artifacts().items():
            (workdir / name).write_text(text)
        return notes
