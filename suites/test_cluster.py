"""Machines of a cluster share a private network and reach each other."""

import pytest

from harness.provisioning import hostname_for


@pytest.mark.cluster(2)
def test_machines_reach_each_other(cluster):
    first, second = cluster
    assert first.private_address != second.private_address
    for here, there in ((first, second), (second, first)):
        here.wait_until_succeeds(f"ip -brief address | grep -w {here.private_address}")
        banner = here.wait_until_succeeds(
            f"curl -s --max-time 5 telnet://{there.private_address}:22 </dev/null | head -c 8 | grep '^SSH-'"
        )
        assert banner.startswith("SSH-")
    assert first.succeed("hostname").strip() == hostname_for(first.name)
