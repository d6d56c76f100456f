"""The service manager's own settings from /etc/systemd/system.conf.d, and the environment of login shells from
/etc/profile.d: a default environment every unit gets, a default stop timeout, a variable a login shell sees.
One machine serves the module; the tests only read."""

import pytest

from harness.ignition import IgnitionConfig

SHOW_ENV = (
    "[Unit]\nDescription=Railyard shows its environment\n"
    "[Service]\nType=oneshot\nRemainAfterExit=yes\n"
    "ExecStart=/bin/sh -c 'echo \"$RAILYARD_DEFAULT\" > /run/railyard-unit-env'\n"
    "[Install]\nWantedBy=multi-user.target\n"
)

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file(
        "/etc/systemd/system.conf.d/50-railyard.conf",
        "[Manager]\nDefaultEnvironment=RAILYARD_DEFAULT=from-the-manager\nDefaultTimeoutStopSec=17s\n",
    )
    .add_file("/etc/profile.d/railyard.sh", "export RAILYARD_PROFILE=from-profile-d\n")
    .add_unit("railyard-show-env.service", contents=SHOW_ENV, enabled=True)
    .to_dict()
)


def test_every_unit_gets_the_default_environment(module_machine):
    m = module_machine
    m.wait_for_unit("railyard-show-env.service")
    assert m.succeed("cat /run/railyard-unit-env") == "from-the-manager\n"


def test_the_default_stop_timeout_applies_to_units_that_set_none(module_machine):
    m = module_machine
    assert m.succeed("systemctl show -P DefaultTimeoutStopUSec").strip() == "17s"
    assert m.succeed("systemctl show -P TimeoutStopUSec railyard-show-env.service").strip() == "17s"


def test_a_login_shell_reads_profile_d(module_machine):
    m = module_machine
    assert m.succeed("bash -lc 'echo $RAILYARD_PROFILE'") == "from-profile-d\n"
    assert m.succeed("sh -c 'echo ${RAILYARD_PROFILE:-unset}'") == "unset\n", "only a login shell reads it"
