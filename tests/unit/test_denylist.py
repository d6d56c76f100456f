"""The denylist's file format and decisions (pure logic), and what the plugin does with it (no machine boots)."""

from __future__ import annotations

import datetime

import pytest

from harness import denylist, reports
from harness.errors import ConfigError
from tests.integration.helpers import run_inner

TODAY = datetime.date(2027, 3, 10)
NAMES = denylist.test_names(
    "suites/test_network.py::test_dns_resolves[qemu-stable]",
    "test_dns_resolves",
    "kola: cl.network.dns\n\nmore",
)


def decide(
    text: str, channel: str = "stable", platform: str = "qemu", arch: str = "x86_64"
) -> denylist.Decision:
    return denylist.decide(denylist.parse(text), NAMES, channel, platform, arch, TODAY)


def test_the_names_a_pattern_may_match() -> None:
    assert NAMES == [
        "suites/test_network.py::test_dns_resolves[qemu-stable]",
        "suites/test_network.py::test_dns_resolves",
        "test_dns_resolves",
        "cl.network.dns",
    ]


@pytest.mark.parametrize(
    "pattern",
    ["suites/test_network.py::*", "*::test_dns_resolves", "test_dns*", "cl.network.*", "*[[]qemu-stable]"],
)
def test_a_matching_entry_without_snooze_skips_with_its_tracker(pattern: str) -> None:
    decision = decide(f"- pattern: '{pattern}'\n  tracker: https://tracker.example/1\n")
    assert decision.skip == "denylisted: https://tracker.example/1"
    assert decision.warn is None


def test_an_entry_that_matches_nothing_does_nothing() -> None:
    assert decide("- pattern: test_ntp*\n") == denylist.Decision()


def test_a_snoozed_entry_skips_before_its_date_and_not_from_it_on() -> None:
    before = decide("- pattern: test_dns*\n  tracker: T-1\n  snooze: 2027-03-11\n")
    assert before.skip == "denylisted: T-1 until 2027-03-11"
    on_the_day = decide("- pattern: test_dns*\n  tracker: T-1\n  snooze: 2027-03-10\n")
    assert on_the_day.skip is None
    assert on_the_day.warn is None


def test_warn_runs_the_test_warn_only_and_a_snooze_skips_it_first() -> None:
    assert decide("- pattern: test_dns*\n  tracker: T-2\n  warn: true\n").warn == "warn-only: T-2"
    snoozed = decide("- pattern: test_dns*\n  tracker: T-2\n  warn: true\n  snooze: '2027-04-01'\n")
    assert snoozed.skip == "denylisted: T-2 until 2027-04-01"
    expired = decide("- pattern: test_dns*\n  tracker: T-2\n  warn: true\n  snooze: '2027-01-01'\n")
    assert (expired.skip, expired.warn) == (None, "warn-only: T-2")


@pytest.mark.parametrize(
    ("scope", "applies"),
    [
        ("channels: [stable]", True),
        ("channels: [alpha, beta]", False),
        ("streams: [stable]", True),
        ("platforms: [qemu, libvirt]", True),
        ("platforms: [aws]", False),
        ("arches: [x86_64]", True),
        ("arches: [aarch64]", False),
    ],
)
def test_channels_platforms_and_arches_narrow_an_entry(scope: str, applies: bool) -> None:
    decision = decide(f"- pattern: test_dns*\n  {scope}\n")
    assert (decision.skip is not None) is applies


def test_an_empty_file_denies_nothing() -> None:
    assert denylist.parse("") == []
    assert denylist.parse("# nothing yet\n") == []


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("pattern: x\n", "is not of type 'array'"),
        ("- tracker: T-1\n", "'pattern' is a required property (entry 1)"),
        ("- pattern: a\n- pattern: b\n  snooze: next week\n", "(entry 2, snooze)"),
        ("- pattern: a\n  snooze: 2027-02-30\n", "is not a date"),
        ("- pattern: a\n  warn: maybe\n", "(entry 1, warn)"),
        ("- pattern: a\n  streem: [stable]\n", "'streem' was unexpected"),
        ("- pattern: [a\n", "not valid YAML"),
    ],
)
def test_a_malformed_file_is_one_clear_error(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as raised:
        denylist.parse(text, "--denylist deny.yaml")
    assert str(raised.value).startswith("--denylist deny.yaml: ")
    assert says in str(raised.value)


TESTS = """
import pytest

pytestmark = pytest.mark.exclude_platforms("libvirt")

def test_known_broken(machine_factory):
    '''kola: cl.broken'''
    raise AssertionError("never reached: the denylist skips it")

def test_flaky_warn_only():
    assert False, "a known failure"

def test_fixed_warn_only():
    pass

def test_unrelated():
    pass
"""


def test_the_plugin_skips_and_warns_as_the_file_says(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_listed=TESTS)
    deny = pytester.path / "deny.yaml"
    deny.write_text(
        "- pattern: cl.broken\n  tracker: https://tracker.example/7\n"
        "- pattern: test_*_warn_only\n  tracker: T-8\n  warn: true\n"
        "- pattern: test_unrelated\n  platforms: [aws]\n"
    )
    result = run_inner(pytester, "--denylist", str(deny), "--channel", "stable")
    result.assert_outcomes(passed=1, skipped=1, xfailed=1, xpassed=1)
    out = result.stdout.str()
    assert "denylisted: https://tracker.example/7" in out
    assert "warn-only: T-8" in out
    assert result.ret == reports.EXIT_WARN_ONLY, "the run passed but for a warn-only failure"


def test_a_malformed_denylist_stops_the_run_before_anything_starts(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_listed=TESTS)
    deny = pytester.path / "deny.yaml"
    deny.write_text("- pattern: a\n  snooze: someday\n")
    result = run_inner(pytester, "--denylist", str(deny))
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    assert f"--denylist {deny}: " in result.stderr.str()
    assert not (pytester.path / "out").exists() or not any((pytester.path / "out").iterdir())
