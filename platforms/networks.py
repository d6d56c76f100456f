"""The networks a platform gives machines booted together: a test's private network (`cluster(n)`) and the
segments of its machines' extra NICs (`@pytest.mark.nics`)."""

from __future__ import annotations

from abc import ABC, abstractmethod

from platforms.machine_spec import ExtraNic, PrivateNet


class NicSegment(ABC):
    """The segment the extra NICs of one number of one test's machines are on, made by
    `Platform.nic_segment()` and closed by whoever made it once its machines are gone."""

    @abstractmethod
    def attach(self, name: str) -> ExtraNic:
        """The NIC machine `name` gets on this segment (one of its `MachineSpec.extra_nics`)."""

    @abstractmethod
    def close(self) -> None:
        """Release what the segment holds (a relay, a socket). Idempotent."""


class PrivateNetwork:
    """The network the machines of one request (`cluster(n)`) share, made by `Platform.private_network()`
    and closed by whoever made it once its machines are gone.

    This base class is the network a cloud's machines are already on (the run's subnet): a machine joins it
    with no NIC of its own, and its `Machine.private_address` is the address the cloud gave it. Local
    platforms return a segment of their own whose `join` gives each machine a second NIC.
    """

    def join(self, name: str) -> PrivateNet | None:
        """The NIC machine `name` gets on this network (its `MachineSpec.private_net`); None when the
        machine's own network is the shared one."""
        return None

    def close(self) -> None:
        """Release what the network holds (a relay, a socket). Idempotent."""
