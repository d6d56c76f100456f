"""What a test asks of the run (markers), and whether it applies to a target. Pure logic."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from harness import machine_options
from harness.errors import ConfigError
from harness.machine_options import MachineOptions, Mark
from platforms.base import CAP_PRIVATE_NETWORK, CAPABILITIES

KNOWN_FLAGS = frozenset({"cold_boot", "no_console_check", "no_ssh_key", "no_settle"})

MARKERS: dict[str, str] = {
    "platforms(*names)": "run only on these platforms (qemu, libvirt, aws, azure)",
    "exclude_platforms(*names)": "never run on these platforms",
    "distros(*names, reason=None)": "run only against these distros (railyard, flatcar, fcos); `reason` says why",
    "channels(*names)": "run for each of these release channels (alpha, beta, stable, lts)",
    "min_version(version)": "skip images older than this OS version",
    "cluster(size)": "the `cluster` fixture boots this many machines that reach each other",
    "ignition(config)": "an Ignition config (dict or JSON text) merged into each machine's config",
    "butane(yaml_text)": "a Butane config translated to Ignition and merged into each machine's config",
    "flags(*names)": f"test flags: {', '.join(sorted(KNOWN_FLAGS))}",
    "timeout(seconds)": "fail the test if its body runs longer than this",
    "requires(*capabilities)": "skip unless the platform's machines have these capabilities",
    "tags(*names)": "free-form tags (`--tag NAME` runs only the tests that carry one of the names given)",
    **machine_options.MARKERS,
}


@dataclass(frozen=True)
class Target:
    """One thing a test runs against: a platform, a channel of an image, its distro and version."""

    platform: str
    channel: str
    distro: str
    version: str | None = None

    @property
    def id(self) -> str:
        return f"{self.platform}-{self.channel}"


@dataclass
class Requirements:
    platforms: set[str] | None = None
    exclude_platforms: set[str] = field(default_factory=set)
    distros: set[str] | None = None
    distros_reason: str | None = None
    """Why a test runs only on `distros` (the `reason=` of its marker), said when it is skipped."""
    channels: list[str] | None = None
    min_version: str | None = None
    cluster_size: int = 3
    ignition: list[dict[str, Any]] = field(default_factory=list)
    butane: list[str] = field(default_factory=list)
    flags: set[str] = field(default_factory=set)
    timeout: float | None = None
    capabilities: set[str] = field(default_factory=set)
    tags: set[str] = field(default_factory=set)
    machine: MachineOptions = field(default_factory=MachineOptions)
    """Extra disks and NICs, memory, firmware, kernel arguments (harness.machine_options)."""


def _names(mark: Mark) -> list[str]:
    names: list[str] = []
    for arg in mark.args:
        if isinstance(arg, list | tuple | set):
            names.extend(str(a) for a in arg)
        else:
            names.append(str(arg))
    if not names:
        raise ConfigError(f"@pytest.mark.{mark.name} needs at least one name")
    return names


def requirements_from_marks(marks: Iterable[Mark]) -> Requirements:
    """Fold markers (closest first, as pytest's iter_markers gives them) into requirements."""
    req = Requirements()
    for mark in marks:
        n = mark.name
        if n == "platforms" and req.platforms is None:
            req.platforms = set(_names(mark))
        elif n == "exclude_platforms":
            req.exclude_platforms |= set(_names(mark))
        elif n == "distros" and req.distros is None:
            req.distros = set(_names(mark))
            req.distros_reason = mark.kwargs.get("reason")
        elif n == "channels" and req.channels is None:
            req.channels = _names(mark)
        elif n == "min_version" and req.min_version is None:
            req.min_version = str(mark.args[0])
        elif n == "cluster":
            size = int(mark.args[0]) if mark.args else int(mark.kwargs.get("size", 3))
            if size < 1:
                raise ConfigError(f"@pytest.mark.cluster({size}): a cluster needs at least one machine")
            req.cluster_size = size
            req.capabilities.add(CAP_PRIVATE_NETWORK)  # `m.private_address` must reach the other machines
        elif n == "ignition":
            req.ignition.extend(_ignition_arg(a) for a in mark.args)
        elif n == "butane":
            req.butane.extend(str(a) for a in mark.args)
        elif n == "flags":
            unknown = set(_names(mark)) - KNOWN_FLAGS
            if unknown:
                raise ConfigError(
                    f"unknown flag(s) {', '.join(sorted(unknown))}: known flags are {', '.join(sorted(KNOWN_FLAGS))}"
                )
            req.flags |= set(_names(mark))
        elif n == "timeout" and req.timeout is None:
            req.timeout = float(mark.args[0])
            if req.timeout <= 0:
                raise ConfigError("@pytest.mark.timeout needs a positive number of seconds")
        elif n == "requires":
            unknown = set(_names(mark)) - CAPABILITIES
            if unknown:
                raise ConfigError(
                    f"@pytest.mark.requires: unknown capability {', '.join(sorted(unknown))}; "
                    f"known: {', '.join(sorted(CAPABILITIES))}"
                )
            req.capabilities |= set(_names(mark))
        elif n == "tags":
            req.tags |= set(_names(mark))
        elif machine_options.is_machine_option(n):
            req.machine = machine_options.fold(req.machine, mark)
    return req


def _ignition_arg(arg: Any) -> dict[str, Any]:
    if isinstance(arg, dict):
        return arg
    if isinstance(arg, str):
        try:
            parsed = json.loads(arg)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"@pytest.mark.ignition: not valid JSON: {exc}") from exc
        if isinstance(parsed, dict):
            return parsed
    raise ConfigError("@pytest.mark.ignition takes an Ignition config as a dict or as JSON text")


def parse_version(version: str) -> tuple[int, ...]:
    parts = re.findall(r"\d+", version)
    return tuple(int(p) for p in parts)


def distro_refusal(req: Requirements, distro: str) -> str | None:
    """Why a test does not run on `distro` (empty: not known yet), or None."""
    if req.distros is None or not distro or distro in req.distros:
        return None
    why = f": {req.distros_reason}" if req.distros_reason else ""
    return f"runs only on distros {', '.join(sorted(req.distros))}, not {distro}{why}"


def skip_reason(
    req: Requirements,
    target: Target,
    capabilities: Iterable[str] = (),
    option_refusal: Callable[[str], str | None] | None = None,
) -> str | None:
    """Why a test does not apply to `target`, or None if it does. `option_refusal` says why the platform
    cannot give its machines a machine option (`Platform.machine_option_refusal`); None: not checked."""
    if req.platforms is not None and target.platform not in req.platforms:
        return f"runs only on platforms {', '.join(sorted(req.platforms))}, not {target.platform}"
    if target.platform in req.exclude_platforms:
        return f"excluded on platform {target.platform}"
    refusal = distro_refusal(req, target.distro)
    if refusal:
        return refusal
    if req.channels is not None and target.channel not in req.channels:
        return f"runs only on channels {', '.join(req.channels)}, not {target.channel}"
    if (
        req.min_version is not None
        and target.version is not None
        and parse_version(target.version) < parse_version(req.min_version)
    ):
        return f"needs OS version {req.min_version} or newer; the image is {target.version}"
    missing = req.capabilities - set(capabilities)
    if missing and target.distro:
        return f"needs machine capabilities {', '.join(sorted(missing))}, which {target.platform} lacks"
    if option_refusal is not None:
        refusals = [r for r in (option_refusal(name) for name in req.machine.asked()) if r is not None]
        if refusals:
            return "; ".join(refusals)
    return None


def channels_for(
    req: Requirements, run_channels: list[str] | None, default_channel: str, any_channel: bool
) -> list[str]:
    """Which channels a test is parametrized over.

    With `--channel` given, exactly those (a test marked for other channels is then skipped with a reason).
    Otherwise a test's `channels` marker wins where the image source can provide any channel (the default
    image is built per channel); else the image's own channel.
    """
    if run_channels:
        return list(dict.fromkeys(run_channels))
    if req.channels and any_channel:
        return list(req.channels)
    return [default_channel]
