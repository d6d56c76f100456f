import pytest

from harness.consolecheck import describe, scan, split_starvation

HEALTHY = """\
[    0.000000] Linux version 6.1.0-28-amd64
[  OK  ] Started ssh.service - OpenBSD Secure Shell server.
ignition[412]: Ignition finished successfully
"""


def test_healthy_console_has_no_matches():
    assert scan(HEALTHY, "console") == []


@pytest.mark.parametrize(
    ("line", "description"),
    [
        ("[   12.3] Kernel panic - not syncing: sysrq triggered crash", "kernel panic"),
        ("[    3.1] BUG: kernel NULL pointer dereference, address: 0000000000000000", "kernel BUG"),
        ("[   22.0] watchdog: BUG: soft lockup - CPU#0 stuck for 23s!", "soft lockup"),
        ("[   88.6] rcu: INFO: rcu_preempt self-detected stall on CPU", "RCU stall"),
        ("[  240.1] INFO: task jbd2/vda1-8:123 blocked for more than 120 seconds.", "hung task"),
        ("[    5.0] Oops: 0002 [#1] PREEMPT SMP NOPTI", "kernel oops"),
        ("[    9.9] app[123]: segfault at 0 ip 000055 sp 00007ff error 6", "segfault"),
        ("You are in emergency mode. After logging in, type", "emergency shell"),
        ("systemd[1]: Failed to start foo.service - Foo.", "failed unit"),
        ("systemd[1]: Dependency failed for bar.service - Bar.", "failed dependency"),
        ("systemd[1]: sysinit.target: Found ordering cycle on swap.target/start", "systemd ordering cycle"),
        ("ignition[400]: CRITICAL : Ignition failed: failed to fetch config", "Ignition failure"),
        ("[FAILED] Failed to start ignition-files.service - Ignition (files).", "Ignition failure"),
        ("[FAILED] Failed to start ignition-f…es.service - Ignition (files).", "Ignition failure"),
        ("CRITICAL : Ignition failed: failed to create files: user not found", "Ignition failure"),
    ],
)
def test_failures_are_found(line, description):
    matches = scan(HEALTHY + line + "\n", "console")
    assert [m.description for m in matches] == [description]
    assert matches[0].line == line.strip()


def test_ignition_asking_for_the_network_is_not_a_failure():
    line = "ignition[265]: failed to fetch config: resource requires networking\n"
    assert scan(HEALTHY + line, "journal") == []
    broken = "ignition[265]: failed to fetch config: GET http://10.0.2.2:1/x: connection refused\n"
    assert [m.description for m in scan(broken, "journal")] == ["Ignition failure"]


def test_ignore_patterns():
    text = "systemd[1]: Failed to start expected-to-fail.service\n"
    assert scan(text, "journal", ignore=[r"expected-to-fail"]) == []


def test_describe_limits_output():
    text = "".join(f"Failed to start unit{i}.service\n" for i in range(15))
    out = describe(scan(text, "m1 console"), limit=3)
    assert out.count("\n") == 3
    assert out.endswith("and 12 more")
    assert out.startswith("m1 console: failed unit: Failed to start unit0.service")


def test_lockups_and_stalls_fail_under_kvm_and_are_tolerated_under_tcg():
    text = (
        "[   88.5] watchdog: BUG: soft lockup - CPU#0 stuck for 22s! [cat:477]\n"
        "[   88.6] rcu: INFO: rcu_preempt self-detected stall on CPU\n"
        "[   90.0] Kernel panic - not syncing: Fatal exception\n"
    )
    matches = scan(text, "console")
    failures, tolerated = split_starvation(matches, emulated=False)
    assert [m.description for m in failures] == ["soft lockup", "RCU stall", "kernel panic"]
    assert tolerated == []
    failures, tolerated = split_starvation(matches, emulated=True)
    assert [m.description for m in failures] == ["kernel panic"]  # a panic is the guest's, whatever the host
    assert [m.description for m in tolerated] == ["soft lockup", "RCU stall"]
