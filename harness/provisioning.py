"""The Ignition the harness writes for a machine: the base config (user, key, updates off), the test's own
parts merged on top, and the cluster NIC. Every snippet is built through `IgnitionConfig`."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from harness.distros import Distro
from harness.ignition import IgnitionConfig, merge, translate_butane, validate
from platforms.base import PrivateNet

CLUSTER_NETWORK_FILE = "/etc/systemd/network/10-railyard-cluster.network"


def hostname_for(name: str) -> str:
    """A valid host name (RFC 1123 label) for a machine name."""
    return re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:63] or "railyard"


def base_ignition(distro: Distro, ssh_public_key: str | None) -> dict[str, Any]:
    """The distro's default user in group `sudo` (with the run's key, unless None), and updates off unless
    the test asks for them (its own update configuration replaces this one in the merge)."""
    config = IgnitionConfig(distro.ignition_version).add_user(
        distro.default_user,
        ssh_keys=[ssh_public_key] if ssh_public_key is not None else [],
        groups=["sudo"],
    )
    result = config.to_dict()
    updates_off = distro.updates_off_ignition()
    return merge(result, updates_off) if updates_off is not None else result


def compose_ignition(
    base: Mapping[str, Any],
    parts: Sequence[Mapping[str, Any]] = (),
    butane: Sequence[str] = (),
    max_version: str | None = None,
) -> dict[str, Any]:
    """`base` merged with the test's Ignition parts and translated Butane, validated (ConfigError)."""
    config: dict[str, Any] = dict(base)
    for part in parts:
        config = merge(config, part)
    for text in butane:
        config = merge(config, translate_butane(text))
    return validate(config, max_version=max_version)


def private_net_ignition(net: PrivateNet, hostname: str, version: str) -> dict[str, Any]:
    """networkd configuration of the cluster NIC (matched by MAC), and a hostname, as Ignition."""
    network = (
        f"[Match]\nMACAddress={net.mac}\n\n[Network]\nAddress={net.address}\n"
        "LinkLocalAddressing=no\nIPv6AcceptRA=no\n"
    )
    return (
        IgnitionConfig(version)
        .add_file(CLUSTER_NETWORK_FILE, network, mode=0o644)
        .add_file("/etc/hostname", hostname_for(hostname) + "\n", mode=0o644)
        .to_dict()
    )
