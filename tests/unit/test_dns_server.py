"""The host's test DNS server, asked over real UDP by dnspython's client."""

from __future__ import annotations

import dns.message
import dns.query
import dns.rcode
import dns.rdatatype

from harness.dns_server import DnsServer, Question


def ask(server: DnsServer, name: str, rdtype: str = "A") -> dns.message.Message:
    return dns.query.udp(dns.message.make_query(name, rdtype), "127.0.0.1", port=server.port, timeout=5.0)


def test_answers_its_records_nxdomain_in_its_zone_and_refuses_the_rest() -> None:
    with DnsServer(("railyard.test",), {"web.railyard.test": "192.0.2.10"}) as server:
        found = ask(server, "WEB.railyard.test.")
        assert found.rcode() == dns.rcode.NOERROR
        assert [r.address for r in found.answer[0]] == ["192.0.2.10"]
        nodata = ask(server, "web.railyard.test", "AAAA")
        assert nodata.rcode() == dns.rcode.NOERROR
        assert nodata.answer == []
        assert ask(server, "nope.railyard.test").rcode() == dns.rcode.NXDOMAIN
        assert ask(server, "example.org").rcode() == dns.rcode.REFUSED
        assert server.asked() == [
            Question("web.railyard.test", "A"),
            Question("web.railyard.test", "AAAA"),
            Question("nope.railyard.test", "A"),
            Question("example.org", "A"),
        ]


def test_garbage_gets_no_answer() -> None:
    server = DnsServer(("railyard.test",), {})
    try:
        assert server.answer(b"\x00\x01not a dns message") is None
    finally:
        server.close()
