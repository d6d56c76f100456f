"""systemd-resolved's settings from resolved.conf.d: an extra stub listener, multicast name services off, names
from /etc/hosts answered by the stub over DNS. One machine serves the module; the tests only read."""

import pytest

from harness.ignition import IgnitionConfig

EXTRA = "127.0.0.2"
NAME, ADDRESS = "railyard-db.internal", "10.66.0.5"

pytestmark = pytest.mark.ignition(
    IgnitionConfig()
    .add_file(
        "/etc/systemd/resolved.conf.d/50-railyard.conf",
        f"[Resolve]\nDNSStubListenerExtra={EXTRA}\nLLMNR=no\nMulticastDNS=no\nReadEtcHosts=yes\n",
    )
    .add_file("/etc/hosts", f"{ADDRESS} {NAME}\n", append=True)
    .to_dict()
)

# A DNS query for an A record, asked over UDP by a few lines of Python (the image has no dig).
QUERY = """
import socket, struct, sys
name, server = sys.argv[1], sys.argv[2]
question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack("!HH", 1, 1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(10)
s.sendto(struct.pack("!HHHHHH", 0x5259, 0x0100, 1, 0, 0, 0) + question, (server, 53))
reply = s.recv(512)
assert reply[:2] == b"RY", reply
print(socket.inet_ntoa(reply[-4:]) if struct.unpack("!H", reply[6:8])[0] else "no answer")
"""


@pytest.fixture(scope="module")
def resolver(module_machine):
    """The module's machine with the query program in /tmp."""
    module_machine.succeed("cat > /tmp/railyard-query.py", stdin=QUERY.encode())
    return module_machine


NEEDS_PYTHON = pytest.mark.distros(
    "railyard", reason="the DNS query is a Python program; Flatcar has no python3"
)


@NEEDS_PYTHON
def test_an_extra_stub_listener(resolver):
    m = resolver
    m.wait_until_succeeds(f"ss -Huln 'sport = :53' | grep -q '{EXTRA}:53'")
    assert m.succeed(f"python3 /tmp/railyard-query.py {NAME} {EXTRA}").strip() == ADDRESS


@NEEDS_PYTHON
def test_the_stub_answers_names_of_etc_hosts(resolver):
    m = resolver
    assert m.succeed(f"python3 /tmp/railyard-query.py {NAME} 127.0.0.53").strip() == ADDRESS
    assert m.succeed(f"getent hosts {NAME}").split()[0] == ADDRESS


def test_multicast_name_services_are_off(module_machine):
    m = module_machine
    status = m.succeed("resolvectl status --no-pager")
    assert "-LLMNR" in status, status
    assert "-mDNS" in status, status
    listening = m.succeed("ss -Hulnp") + m.succeed("ss -Htlnp")
    assert ":5355 " not in listening, listening  # LLMNR's port
