"""The one way sdserve reaches out to a URL a caller gave it (webhooks, init images).

A caller-supplied URL is an SSRF risk: it could point the server at its own admin ports,
the LAN, or the cloud metadata service. So: http/https only; the host is resolved here and
every address it resolves to must be public; the connection then goes to the checked
address (so DNS cannot answer differently a moment later); redirects are followed by hand
and each hop is checked the same way; responses have a size and a total time limit.
``allow_private`` lifts the public-address rule for local setups and tests; cloud metadata
addresses stay refused even then.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urljoin

import httpx

from ..errors import BadInput

__all__ = ["FetchPolicy", "Fetcher", "FetchResponse", "FetchRefused", "FetchFailed"]

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

# Instance metadata endpoints (AWS/GCP/Azure/OpenStack, AWS IPv6, Alibaba): never a fair target.
_METADATA = {ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")}
_REDIRECTS = {301, 302, 303, 307, 308}
# IPv6 prefixes that carry an IPv4 address in their low 32 bits and reach it through a
# translator or tunnel (NAT64 well-known and local-use, IPv4-compatible, SIIT-translated).
# Python calls several of them "global", so the address inside is what gets checked.
_V4_IN_LOW_BITS = [ipaddress.ip_network(n) for n in ("64:ff9b::/96", "64:ff9b:1::/48", "::/96", "::ffff:0:0:0/96")]


class FetchRefused(BadInput):
    """The URL is not allowed: wrong scheme, or it leads to a non-public address."""


class FetchFailed(BadInput):
    """The URL was allowed but could not be fetched: network error, timeout, too large, or
    (for ``fetch_bytes``) a non-2xx answer. ``retryable`` says whether trying later may help."""

    def __init__(self, field: str, message: str, retryable: bool = True) -> None:
        super().__init__(field, message)
        self.retryable = retryable


@dataclass(frozen=True)
class FetchPolicy:
    """Limits of outbound requests; the composition root fills it from Settings."""

    allow_private: bool = False
    # Networks allowed even though not public (e.g. one internal webhook receiver), CIDR strings.
    allow_networks: tuple[str, ...] = ()
    timeout_s: float = 15.0
    max_bytes: int = 20 * 1024 * 1024
    max_redirects: int = 5


@dataclass(frozen=True)
class FetchResponse:
    status: int
    headers: httpx.Headers
    content: bytes
    url: str


def _embedded_ipv4(ip: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address leads to (::ffff:127.0.0.1, 6to4 2002:7f00:1::,
    NAT64 64:ff9b::7f00:1, ...), or None."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if int(ip) > 1 and any(ip in net for net in _V4_IN_LOW_BITS):  # ::1 and :: are themselves
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _refusal(ip: IPAddress, policy: FetchPolicy) -> str | None:
    """Why ``ip`` may not be contacted, or None if it may."""
    if isinstance(ip, ipaddress.IPv6Address) and (v4 := _embedded_ipv4(ip)) is not None:
        ip = v4  # ::ffff:127.0.0.1 is 127.0.0.1, and so is 64:ff9b::7f00:1 behind a NAT64
    if ip in _METADATA:
        return "a cloud metadata address"
    if policy.allow_private or any(ip in ipaddress.ip_network(n, strict=False) for n in policy.allow_networks):
        return None
    for what, hit in (("loopback", ip.is_loopback), ("unspecified", ip.is_unspecified),
                      ("link-local", ip.is_link_local), ("private", ip.is_private),
                      ("multicast", ip.is_multicast), ("reserved", ip.is_reserved)):
        if hit:
            return f"a {what} address"
    if not ip.is_global:
        return "not a public address"
    return None


class Fetcher:
    """SSRF-safe outbound HTTP. ``field`` names the request field a URL came from, so a
    refusal reads as the caller's error on that field."""

    def __init__(self, policy: FetchPolicy | None = None) -> None:
        self.policy = policy or FetchPolicy()

    def precheck(self, url: str, field: str = "url") -> httpx.URL:
        """What can be checked without the network: the scheme, and the address when the
        host is an IP literal. For refusing a bad URL when it is submitted; names are
        resolved (and checked again) when the URL is actually used."""
        try:
            u = httpx.URL(url)
        except (httpx.InvalidURL, TypeError, ValueError):
            raise FetchRefused(field, f"{url!r} is not a valid URL") from None
        if u.scheme not in ("http", "https"):
            raise FetchRefused(field, f"URL scheme {u.scheme or '(none)'!r} is not allowed; use http or https")
        if not u.host:
            raise FetchRefused(field, "URL has no host")
        try:
            ip = ipaddress.ip_address(u.host)
        except ValueError:
            return u
        why = _refusal(ip, self.policy)
        if why:
            raise FetchRefused(field, f"URL host {ip} is {why}; outbound requests may only reach public addresses")
        return u

    async def resolve(self, url: str, field: str = "url") -> tuple[httpx.URL, IPAddress]:
        """Check ``url`` and return it parsed with the one address to connect to."""
        u = self.precheck(url, field)
        port = u.port or (443 if u.scheme == "https" else 80)
        try:
            addrs = [ipaddress.ip_address(u.host)]
        except ValueError:
            try:
                infos = await asyncio.get_running_loop().getaddrinfo(u.host, port, type=socket.SOCK_STREAM)
            except (socket.gaierror, UnicodeError) as e:
                raise FetchFailed(field, f"host {u.host} could not be resolved ({e})") from None
            # scope ids (fe80::1%eth0) are dropped: link-local is refused anyway.
            addrs = list(dict.fromkeys(ipaddress.ip_address(str(i[4][0]).split("%")[0]) for i in infos))
        if not addrs:
            raise FetchFailed(field, f"host {u.host} has no addresses")
        # Every address must pass: a name that resolves to one public and one private
        # address would otherwise be a coin toss an attacker can repeat.
        for ip in addrs:
            why = _refusal(ip, self.policy)
            if why:
                raise FetchRefused(field, f"URL host {u.host} resolves to {ip}, {why}; outbound requests "
                                          "may only reach public addresses")
        return u, addrs[0]

    async def request(self, method: str, url: str, *, field: str = "url", content: bytes | None = None,
                      headers: dict[str, str] | None = None, follow_redirects: bool = True,
                      max_bytes: int | None = None) -> FetchResponse:
        """Send one request (following checked redirects if asked) and return the answer
        whatever its status. Raises FetchRefused, or FetchFailed for network trouble."""
        limit = self.policy.max_bytes if max_bytes is None else max_bytes
        try:
            async with asyncio.timeout(self.policy.timeout_s):
                return await self._request(method, url, field, content, headers or {}, follow_redirects, limit)
        except TimeoutError:
            raise FetchFailed(field, f"no complete answer from {url} within {self.policy.timeout_s:g}s") from None

    async def _request(self, method: str, url: str, field: str, content: bytes | None, headers: dict[str, str],
                       follow: bool, limit: int) -> FetchResponse:
        timeout = httpx.Timeout(self.policy.timeout_s)
        # trust_env=False: a proxy from the environment would resolve names itself and
        # undo the address check.
        async with httpx.AsyncClient(timeout=timeout, trust_env=False, follow_redirects=False) as client:
            for _ in range(self.policy.max_redirects + 1):
                u, ip = await self.resolve(url, field)
                pinned = u.copy_with(host=str(ip))
                host_header = u.host if u.port is None else f"{u.host}:{u.port}"
                ext = {"sni_hostname": u.host} if u.scheme == "https" else {}
                req = client.build_request(method, pinned, content=content,
                                           headers={**headers, "Host": host_header}, extensions=ext)
                try:
                    resp = await client.send(req, stream=True)
                except httpx.HTTPError as e:
                    raise FetchFailed(field, f"could not reach {u.host}: {type(e).__name__}: {e}") from None
                try:
                    location = resp.headers.get("location")
                    if follow and resp.status_code in _REDIRECTS and location:
                        url = urljoin(str(u), location)
                        if resp.status_code == 303 or (resp.status_code in (301, 302) and method == "POST"):
                            method, content = "GET", None
                        continue
                    body = await self._read(resp, limit, field, u.host)
                    return FetchResponse(resp.status_code, resp.headers, body, str(u))
                finally:
                    await resp.aclose()
        raise FetchFailed(field, f"more than {self.policy.max_redirects} redirects", retryable=False)

    @staticmethod
    async def _read(resp: httpx.Response, limit: int, field: str, host: str) -> bytes:
        declared = resp.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise FetchFailed(field, f"the answer from {host} is {declared} bytes; the limit is {limit}", retryable=False)
        buf = bytearray()
        try:
            async for chunk in resp.aiter_bytes():
                buf += chunk
                if len(buf) > limit:
                    raise FetchFailed(field, f"the answer from {host} exceeds the limit of {limit} bytes",
                                      retryable=False)
        except httpx.HTTPError as e:
            raise FetchFailed(field, f"reading from {host} failed: {type(e).__name__}: {e}") from None
        return bytes(buf)

    async def fetch_bytes(self, url: str, field: str = "url") -> bytes:
        """GET ``url`` and return the body; any non-2xx answer is FetchFailed naming ``field``."""
        resp = await self.request("GET", url, field=field)
        if not 200 <= resp.status < 300:
            raise FetchFailed(field, f"{url} answered HTTP {resp.status}", retryable=resp.status >= 500)
        return resp.content
