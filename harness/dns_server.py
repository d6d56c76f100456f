"""A small authoritative DNS server on the host's 127.0.0.1 (UDP), for tests of the guest's name resolution:
it answers the A records it is given, NXDOMAIN for other names of its zones, and REFUSED outside them, and
it remembers every question it was asked. Guests reach it where the platform lets them reach the host from
boot on (`Platform.boot_host_address`, QEMU's 10.0.2.2), never through a resolver outside the host."""

from __future__ import annotations

import socket
import threading
from collections.abc import Mapping
from dataclasses import dataclass

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

TTL = 30


@dataclass(frozen=True)
class Question:
    name: str  # without the final dot, lower case
    type: str  # "A", "AAAA", ...


class DnsServer:
    """Serves `records` (name -> IPv4 address) for the names under `zones`; `with DnsServer(...) as server:`
    starts it on a free UDP port of 127.0.0.1 (`server.port`) and stops it on leaving."""

    def __init__(self, zones: tuple[str, ...], records: Mapping[str, str]) -> None:
        self.zones = tuple(dns.name.from_text(z) for z in zones)
        self.records = {dns.name.from_text(name): address for name, address in records.items()}
        self.questions: list[Question] = []
        self._lock = threading.Lock()
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port: int = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="railyard-dns", daemon=True)

    def __enter__(self) -> DnsServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5.0)
        self._sock.close()

    def asked(self) -> list[Question]:
        with self._lock:
            return list(self.questions)

    def answer(self, wire: bytes) -> bytes | None:
        """The response to one query in wire format (None for what is not a query)."""
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        if len(query.question) != 1:
            response.set_rcode(dns.rcode.FORMERR)
            return response.to_wire()
        question = query.question[0]
        with self._lock:
            self.questions.append(
                Question(
                    question.name.to_text(omit_final_dot=True).lower(), dns.rdatatype.to_text(question.rdtype)
                )
            )
        name = question.name
        if not any(name.is_subdomain(zone) for zone in self.zones):
            response.flags &= ~dns.flags.AA
            response.set_rcode(dns.rcode.REFUSED)
        elif name not in self.records:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.A and question.rdclass == dns.rdataclass.IN:
            response.answer.append(dns.rrset.from_text(name, TTL, "IN", "A", self.records[name]))
        # Another type of a known name: NOERROR with no answer (NODATA).
        return response.to_wire()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                wire, peer = self._sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            reply = self.answer(wire)
            if reply is not None:
                try:
                    self._sock.sendto(reply, peer)
                except OSError:
                    return


__all__ = ["DnsServer", "Question"]
