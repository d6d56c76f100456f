"""`railyard list [--json]`: the tests pytest would run, with their markers resolved (collection only)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

TESTS = '''
import pytest

pytestmark = pytest.mark.tags("network")


@pytest.mark.platforms("qemu", "libvirt")
@pytest.mark.channels("alpha", "beta")
@pytest.mark.cluster(2)
@pytest.mark.requires("boot-host-services")
def test_pair(cluster):
    """kola: cl.network.pair (Ping)

    More words."""


@pytest.mark.distros("railyard")
@pytest.mark.disks(512, 1024)
@pytest.mark.min_version("3.0")
@pytest.mark.tags("storage", "slow")
@pytest.mark.timeout(600)
def test_disks(module_machine):
    """The extra disks are there."""


def test_plain():
    pass
'''


def railyard_list(pytester: pytest.Pytester, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "harness.cli", "list", *args],
        cwd=pytester.path,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )


def listed(pytester: pytest.Pytester, *pytest_args: str) -> dict[str, dict]:
    done = railyard_list(pytester, "--json", "--", *pytest_args, str(pytester.path))
    assert done.returncode == 0, done.stderr
    return {t["name"].split("::")[-1]: t for t in json.loads(done.stdout)}


def test_markers_are_resolved_per_test_function(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_listed=TESTS)
    tests = listed(pytester)
    assert set(tests) == {"test_pair", "test_disks", "test_plain"}
    pair = tests["test_pair"]
    assert pair["kola"] == "cl.network.pair"
    assert pair["description"] == "kola: cl.network.pair (Ping)"
    assert pair["platforms"] == ["libvirt", "qemu"]
    assert pair["run_channels"] == ["alpha", "beta"]
    assert pair["cluster_size"] == 2
    assert pair["capabilities"] == ["boot-host-services", "private-network"]
    assert pair["tags"] == ["network"]
    assert len(pair["ids"]) == 2
    disks = tests["test_disks"]
    assert disks["distros"] == ["railyard"]
    assert disks["machine"]["disks_mib"] == [512, 1024]
    assert (disks["min_version"], disks["timeout"]) == ("3.0", 600.0)
    assert disks["tags"] == ["network", "slow", "storage"]
    assert disks["shares_machine"] is True
    assert tests["test_plain"]["boots"] is False


def test_what_is_listed_is_what_the_same_arguments_would_run(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_listed=TESTS)
    assert set(listed(pytester, "--tag", "storage")) == {"test_disks"}
    assert listed(pytester, "--channel", "lts")["test_pair"]["run_channels"] == ["lts"]
    assert set(listed(pytester, "-k", "plain")) == {"test_plain"}


def test_a_person_reads_one_line_per_test_and_the_count(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(test_listed=TESTS)
    done = railyard_list(pytester, "--", str(pytester.path))
    assert done.returncode == 0, done.stderr
    assert "test_listed.py::test_pair  [cl.network.pair]" in done.stdout
    assert "channels alpha,beta; only libvirt,qemu; cluster 2; tags network" in done.stdout
    assert done.stdout.rstrip().endswith("3 test functions")


def test_tests_that_cannot_be_collected_are_one_error(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        test_broken="import pytest\n\n@pytest.mark.cluster(0)\ndef test_x(cluster):\n    pass\n"
    )
    done = railyard_list(pytester, "--json", "--", str(pytester.path))
    assert done.returncode == 2
    assert "a cluster needs at least one machine" in done.stderr
    assert done.stdout == ""


def test_the_suites_list_at_least_sixty_test_functions() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "harness.cli", "list", "--json", "--", "--channel", "stable", "suites/"],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    tests = json.loads(done.stdout)
    assert len(tests) >= 60
    assert all(t["name"].startswith("suites/test_") for t in tests)
