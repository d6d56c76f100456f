"""What hostnamed reports from /etc/machine-info a config writes (a pretty name, a chassis, a deployment and a
location, as fleet tools read them), beside the static hostname. One machine serves the module; the tests
only read."""

import pytest

from harness.ignition import IgnitionConfig

INFO = {
    "PRETTY_HOSTNAME": "Railyard Test Machine",
    "CHASSIS": "vm",
    "DEPLOYMENT": "railyard-ci",
    "LOCATION": "rack 7, slot 3",
}

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file("/etc/hostname", "railyard-info\n")
    .add_file("/etc/machine-info", "".join(f'{k}="{v}"\n' for k, v in INFO.items()))
    .to_dict()
)


def test_hostnamed_reports_what_machine_info_says(module_machine):
    m = module_machine
    shown = {
        key: m.succeed(f"hostnamectl {key}").strip()
        for key in ("hostname", "chassis", "deployment", "location")
    }
    assert shown == {
        "hostname": "railyard-info",
        "chassis": INFO["CHASSIS"],
        "deployment": INFO["DEPLOYMENT"],
        "location": INFO["LOCATION"],
    }
    assert m.succeed("hostnamectl --pretty hostname").strip() == INFO["PRETTY_HOSTNAME"]


def test_the_static_hostname_is_the_kernel_s(module_machine):
    assert module_machine.succeed("uname -n").strip() == "railyard-info"
