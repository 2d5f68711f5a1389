"""`gateway integration test`: check an integration for real, one named step at a time.

Each step does what a delivery would do (log in, write, rename, delete a probe file, or ask
the relay whether it takes the configured addresses) without handing over a document, and
reports ok or the reason. The reasons are the adapters' own, which never contain secrets.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiosmtplib
import asyncssh
import httpx

from gateway.outbound.base import DeliveryError
from gateway.outbound.kinds import (
    DirectoryOptions,
    HttpOptions,
    MailboxOptions,
    SftpOptions,
    TrytonOptions,
    parse_options,
)
from gateway.outbound.naming import check_upload_path
from gateway.outbound.secrets import read_secret


@dataclass(frozen=True)
class Step:
    name: str
    ok: bool
    detail: str


class Probe:
    """Runs steps in order and stops at the first failure: later steps would only repeat it."""

    def __init__(self) -> None:
        self.steps: list[Step] = []

    async def step(self, name: str, action: Callable[[], Awaitable[str]]) -> bool:
        if self.steps and not self.steps[-1].ok:
            return False
        try:
            detail = await action()
        except DeliveryError as exc:
            self.steps.append(Step(name, False, f"{exc.code}: {exc.text}"))
            return False
        except (
            OSError,
            ValueError,
            asyncssh.Error,
            aiosmtplib.SMTPException,
            httpx.HTTPError,
        ) as exc:
            self.steps.append(Step(name, False, f"{type(exc).__name__}: {exc}"))
            return False
        self.steps.append(Step(name, True, detail))
        return True


async def run(kind: str, name: str, options: dict[str, Any]) -> list[Step]:
    opts = parse_options(kind, options, f"integration {name!r}", "")
    probe = Probe()
    if isinstance(opts, DirectoryOptions):
        await _directory(probe, opts)
    elif isinstance(opts, SftpOptions):
        await _sftp(probe, name, opts)
    elif isinstance(opts, MailboxOptions):
        await _mailbox(probe, opts)
    elif isinstance(opts, TrytonOptions):
        await _tryton(probe, name, opts)
    else:
        await _http(probe, opts)
    return probe.steps


def _probe_name() -> str:
    return f".gateway-probe-{uuid.uuid4().hex}"


async def _directory(probe: Probe, opts: DirectoryOptions) -> None:
    folder = opts.path / opts.upload_path
    tmp, final = folder / f"{_probe_name()}.part", folder / _probe_name()

    async def write() -> str:
        await asyncio.to_thread(folder.mkdir, parents=True, exist_ok=True)
        await asyncio.to_thread(tmp.write_bytes, b"gateway probe\n")
        return str(tmp)

    async def rename() -> str:
        await asyncio.to_thread(tmp.rename, final)
        return str(final)

    async def delete() -> str:
        await asyncio.to_thread(final.unlink)
        return "probe file removed"

    await probe.step("write", write)
    await probe.step("rename", rename)
    await probe.step("delete", delete)


async def _sftp(probe: Probe, name: str, opts: SftpOptions) -> None:
    from gateway.outbound.sftp import SftpAdapter

    adapter = SftpAdapter(name, opts)
    folder = opts.upload_path.rstrip("/") or "."
    tmp, final = f"{folder}/{_probe_name()}.part", f"{folder}/{_probe_name()}"
    links: list[Any] = []

    async def login() -> str:
        links.append(await adapter.open_link())
        return f"{opts.username}@{opts.host}:{opts.port}, host key matches the pinned one"

    async def write() -> str:
        problem = check_upload_path(opts.upload_path)
        if problem:
            raise ValueError(f"upload path {opts.upload_path!r} {problem}")
        sftp = links[0].sftp
        await sftp.makedirs(folder, exist_ok=True)
        async with sftp.open(tmp, "wb") as fh:
            await fh.write(b"gateway probe\n")
        return tmp

    async def rename() -> str:
        await links[0].sftp.rename(tmp, final)
        return final

    async def delete() -> str:
        await links[0].sftp.remove(final)
        return "probe file removed"

    try:
        await probe.step("login", login)
        await probe.step("write", write)
        await probe.step("rename", rename)
        await probe.step("delete", delete)
    finally:
        for link in links:
            await link.close()


async def _mailbox(probe: Probe, opts: MailboxOptions) -> None:
    from gateway.outbound import mailbox

    smtp = mailbox.relay(opts)
    fixed = [
        a
        for a in (opts.to, opts.to_purchase, opts.to_sales, opts.to_bank, opts.to_other)
        if a and "[" not in a
    ]

    async def connect() -> str:
        await mailbox.connect(smtp, opts)
        return f"{opts.host}:{opts.port} answered EHLO (tls = {opts.tls})"

    async def login() -> str:
        return await mailbox.login(smtp, opts)

    async def recipients() -> str:
        await smtp.mail(opts.from_address)
        for address in fixed:
            await smtp.rcpt(address)
        await smtp.rset()
        return "accepted: " + (", ".join(fixed) or "(only templated addresses, not checked)")

    try:
        await probe.step("connect", connect)
        await probe.step("login", login)
        await probe.step("recipients", recipients)
    finally:
        with contextlib.suppress(aiosmtplib.SMTPException):
            await smtp.quit()
        smtp.close()


async def _http(probe: Probe, opts: HttpOptions) -> None:
    async def secret() -> str:
        if not read_secret(opts.secret_file, opts.secret_credential, "secret"):
            raise ValueError("the signing secret is empty")
        return "signing secret readable"

    async def reach() -> str:
        async with httpx.AsyncClient(timeout=15.0, trust_env=False) as client:
            response = await client.head(opts.url)
        return f"{opts.url} answered HTTP {response.status_code}"

    await probe.step("secret", secret)
    await probe.step("reach", reach)


async def _tryton(probe: Probe, name: str, opts: TrytonOptions) -> None:
    """One login, never retried: the package locks a user out after five wrong tries."""
    from gateway.outbound.tryton.adapter import TrytonAdapter

    adapter = TrytonAdapter(name, opts)

    async def login() -> str:
        found = await adapter.test()
        return f"logged in as {found['user']} (company {found['company']})"

    try:
        await probe.step("login", login)
    finally:
        await adapter.close()
