"""A config Ignition cannot apply fails the first boot, visibly: the harness stops waiting and shows why."""

import pytest

from harness.errors import BootError

MISSING_USER = "railyard-nobody"
UNAPPLIABLE = {  # valid as a config; fails as Ignition applies it: the file's owner does not exist
    "ignition": {"version": "3.3.0"},
    "storage": {
        "files": [
            {
                "path": "/etc/railyard/never-written",
                "contents": {"source": "data:,railyard"},
                "user": {"name": MISSING_USER},
            }
        ]
    },
}


@pytest.mark.flags("no_console_check")  # the failure on the console is what this test expects
# A cloud's console arrives late and whole: there the harness sees the failure only when the boot times out.
@pytest.mark.exclude_platforms("aws", "azure")
def test_a_config_ignition_cannot_apply_fails_the_first_boot_visibly(machine_factory):
    """kola: coreos.ignition.failure"""
    with pytest.raises(BootError) as failure:
        machine_factory.create(ignition=UNAPPLIABLE)
    evidence = str(failure.value)
    assert "the boot failed for good" in evidence, evidence
    assert "Ignition failure" in evidence, evidence
    assert MISSING_USER in evidence, "the console says why Ignition failed"
