from dataclasses import dataclass, field
from typing import Any

import pytest

from harness.errors import ConfigError
from harness.targets import Target, channels_for, parse_version, requirements_from_marks, skip_reason


@dataclass
class M:
    name: str
    args: tuple[Any, ...] = ()
    kwargs: dict[str, Any] = field(default_factory=dict)


QEMU_STABLE = Target("qemu", "stable", "railyard", "1.2.0")


def test_no_markers_apply_everywhere():
    assert skip_reason(requirements_from_marks([]), QEMU_STABLE) is None


@pytest.mark.parametrize(
    ("marks", "reason"),
    [
        ([M("platforms", ("aws", "azure"))], "runs only on platforms aws, azure, not qemu"),
        ([M("exclude_platforms", ("qemu",))], "excluded on platform qemu"),
        ([M("distros", ("flatcar",))], "runs only on distros flatcar, not railyard"),
        ([M("channels", ("alpha", "beta"))], "runs only on channels alpha, beta, not stable"),
        ([M("min_version", ("1.10",))], "needs OS version 1.10 or newer; the image is 1.2.0"),
        ([M("requires", ("snapshot",))], "needs machine capabilities snapshot, which qemu lacks"),
    ],
)
def test_skip_reasons_say_why(marks, reason):
    assert skip_reason(requirements_from_marks(marks), QEMU_STABLE) == reason


def test_closest_marker_wins():
    req = requirements_from_marks([M("channels", ("lts",)), M("channels", ("alpha",))])
    assert req.channels == ["lts"]


def test_capabilities_present():
    req = requirements_from_marks([M("requires", ("hard-reset",))])
    assert skip_reason(req, QEMU_STABLE, {"hard-reset"}) is None


def test_min_version_numeric_not_lexical():
    assert parse_version("1.10.0") > parse_version("1.9.3")
    req = requirements_from_marks([M("min_version", ("1.9",))])
    assert skip_reason(req, Target("qemu", "stable", "railyard", "1.10.0")) is None


def test_unknown_flag_is_an_error():
    with pytest.raises(ConfigError, match="unknown flag"):
        requirements_from_marks([M("flags", ("no_such_flag",))])


def test_ignition_marker_accepts_dict_and_json_and_rejects_other():
    req = requirements_from_marks([M("ignition", ({"ignition": {"version": "3.3.0"}}, '{"a": 1}'))])
    assert req.ignition == [{"ignition": {"version": "3.3.0"}}, {"a": 1}]
    with pytest.raises(ConfigError, match="not valid JSON"):
        requirements_from_marks([M("ignition", ("{nope",))])
    with pytest.raises(ConfigError, match="dict or as JSON"):
        requirements_from_marks([M("ignition", (42,))])


def test_cluster_and_timeout_validation():
    assert requirements_from_marks([M("cluster", (2,))]).cluster_size == 2
    with pytest.raises(ConfigError):
        requirements_from_marks([M("cluster", (0,))])
    with pytest.raises(ConfigError):
        requirements_from_marks([M("timeout", (-1,))])


def test_channels_for():
    req = requirements_from_marks([M("channels", ("alpha", "beta", "stable", "lts"))])
    assert channels_for(req, None, "stable", any_channel=True) == ["alpha", "beta", "stable", "lts"]
    assert channels_for(req, None, "stable", any_channel=False) == ["stable"]
    assert channels_for(req, ["beta", "beta"], "stable", any_channel=True) == ["beta"]
    assert channels_for(requirements_from_marks([]), None, "lts", any_channel=True) == ["lts"]


def test_target_id_is_readable():
    assert QEMU_STABLE.id == "qemu-stable"


def test_unknown_capability_is_an_error():
    with pytest.raises(ConfigError, match="unknown capability power-cycel"):
        requirements_from_marks([M("requires", ("power-cycel",))])


def test_a_cluster_needs_a_private_network():
    req = requirements_from_marks([M("cluster", (2,))])
    assert "private-network" in req.capabilities
    assert skip_reason(req, Target("aws", "stable", "flatcar", "1.0.0"), frozenset()) == (
        "needs machine capabilities private-network, which aws lacks"
    )


@pytest.mark.parametrize("name", ["qemu", "libvirt", "aws", "azure"])
def test_each_platform_declares_its_machines_capabilities_once(name):
    from harness.registry import load_platform
    from platforms.base import CAP_HARD_RESET, CAP_POWER_CYCLE, CAPABILITIES

    platform = load_platform(name)
    assert platform.machine_capabilities <= CAPABILITIES
    local = name in ("qemu", "libvirt")
    assert ({CAP_HARD_RESET, CAP_POWER_CYCLE} <= platform.machine_capabilities) == local
