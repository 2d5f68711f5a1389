"""A DNS server on a loopback UDP port answering TXT (and A) questions from a dict, so SPF and
DKIM run their real lookups against records a test controls. Names listed in `servfail` answer
SERVFAIL, as a broken upstream resolver would."""

from __future__ import annotations

import socket
import threading
from dataclasses import dataclass, field

import dns.flags
import dns.message
import dns.rcode
import dns.rdatatype
import dns.rrset


@dataclass
class DnsStub:
    txt: dict[str, list[str]] = field(default_factory=dict)
    servfail: set[str] = field(default_factory=set)
    queries: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.port = int(self.sock.getsockname()[1])
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            self.sock.sendto(self._answer(dns.message.from_wire(data)).to_wire(), peer)

    def _answer(self, query: dns.message.Message) -> dns.message.Message:
        response = dns.message.make_response(query)
        response.flags |= dns.flags.AA
        question = query.question[0]
        name = question.name.to_text(omit_final_dot=True).lower()
        self.queries.append(f"{name}/{dns.rdatatype.to_text(question.rdtype)}")
        if name in self.servfail:
            response.set_rcode(dns.rcode.SERVFAIL)
        elif name not in self.txt:
            response.set_rcode(dns.rcode.NXDOMAIN)
        elif question.rdtype == dns.rdatatype.TXT:
            texts = [_quoted(t) for t in self.txt[name]]
            response.answer.append(dns.rrset.from_text(question.name, 60, "IN", "TXT", *texts))
        return response

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.sock.close()


def _quoted(text: str) -> str:
    """TXT strings are at most 255 bytes: long ones (DKIM keys) are split into several."""
    chunks = [text[i : i + 250] for i in range(0, len(text), 250)] or [""]
    return " ".join('"' + c.replace('"', '\\"') + '"' for c in chunks)
