"""journald takes its settings from drop-ins a config writes: the lowest level it stores, a unit's own
journal namespace, a unit's rate limit. One machine serves the module; each test logs under its own tag."""

import pytest

from harness.ignition import IgnitionConfig

NAMESPACED = (
    "[Unit]\nDescription=Railyard logs into its own namespace\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\nLogNamespace=railyard\n"
    "ExecStart=/bin/echo written-to-the-railyard-namespace\n"
    "[Install]\nWantedBy=multi-user.target\n"
)
CHATTY_LINES = 200
CHATTY = (
    "[Unit]\nDescription=Railyard logs more than its rate limit lets through\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    "LogRateLimitIntervalSec=1h\nLogRateLimitBurst=10\n"
    f"ExecStart=/bin/sh -c 'i=0; while [ $i -lt {CHATTY_LINES} ]; do i=$((i + 1)); echo chatty-$i; done'\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file("/etc/systemd/journald.conf.d/50-railyard.conf", "[Journal]\nMaxLevelStore=info\n")
    .add_unit("railyard-namespaced.service", contents=NAMESPACED, enabled=True)
    .add_unit("railyard-chatty.service", contents=CHATTY, enabled=True)
    .to_dict()
)


def test_messages_below_the_stored_level_are_dropped(module_machine):
    m = module_machine
    m.succeed(
        "logger -t railyard-level -p user.debug below-the-level; logger -t railyard-level -p user.info at-the-level"
    )
    # journald handles one socket's messages in order: once the later one is stored, the earlier was seen.
    m.wait_until_succeeds("sudo journalctl -q -o cat -t railyard-level | grep -qx at-the-level")
    stored = m.succeed("sudo journalctl -q -o cat -t railyard-level")
    assert "below-the-level" not in stored, stored


def test_a_unit_logs_into_its_own_namespace(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-namespaced.service")
    line = "written-to-the-railyard-namespace"
    m.wait_until_succeeds(
        f"sudo journalctl -q -o cat --namespace=railyard -u railyard-namespaced.service | grep -qx {line}"
    )
    default = m.succeed("sudo journalctl -q -o cat -u railyard-namespaced.service")
    assert line not in default, default
    m.succeed("systemctl is-active systemd-journald@railyard.service")


def test_a_unit_s_rate_limit_drops_what_exceeds_it(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-chatty.service")
    kept = m.succeed(
        "sudo journalctl -q -o cat -u railyard-chatty.service | grep -c '^chatty-' || true"
    ).strip()
    # journald scales a burst by the free space of the journal's file system; never to all of the lines.
    assert 10 <= int(kept) < CHATTY_LINES, kept
    assert (
        m.succeed("sudo journalctl -q -o cat -u railyard-chatty.service | grep -x chatty-1").strip()
        == "chatty-1"
    )
