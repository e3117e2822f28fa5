"""What the generator refuses to draft, with the reason: the seed's generator executed code the
model wrote; this one only writes declarative definitions, and refuses descriptions (and
definitions) that ask for code execution, a shell, file access, or HTTP tools reaching
private, loopback or link-local addresses (cloud metadata at 169.254.169.254 above all).

Descriptions are checked before any model call, definitions after it; both checks are pure.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlsplit

_F = re.IGNORECASE
# Code execution named outright: refused in descriptions and in definitions.
_CODE = [
    (re.compile(r"\bos\s*\.\s*(system|popen|exec\w*|spawn\w*)\b", _F), "asks for os.system"),
    (re.compile(r"\bsubprocess\b|\bpopen\b", _F), "asks for subprocess execution"),
    (re.compile(r"\b(eval|exec|compile|__import__)\s*\(", _F), "asks for eval/exec of code"),
    (
        re.compile(
            r"\beval\b|\b(use|uses|using|call|calls|calling|via|with|run|runs)\s+exec\b", _F
        ),
        "asks for eval/exec of code",
    ),
    (re.compile(r"\bimport\s+(os|sys|subprocess|shutil|socket)\b", _F), "contains Python code"),
    (re.compile(r"(/etc/(passwd|shadow|hosts)|~/\.ssh|\bfile://|\.\./\.\.)", _F), "names files"),
]
# What a description may not ask for (definitions are not held to these: a system prompt
# saying "you never run code" is fine).
_ASKS = [
    (
        re.compile(
            r"\b(run|runs|running|execute[sd]?|executing|evaluate[sd]?|evaluating|interpret)"
            r"\b[^.\n]{0,40}?\b(code|shell|commands?|scripts?|python|bash|javascript|programs?)\b",
            _F,
        ),
        "asks to execute code or commands",
    ),
    (
        re.compile(
            r"\b(shell|bash|zsh|sh|powershell|terminal|console)\s+"
            r"(access|commands?|scripts?|sessions?|prompts?|one-liners?)\b"
            r"|\b(open|opens|spawn|spawns|get|give|with|run|runs|into)\s+(a\s+|an\s+)?"
            r"(shell|bash|zsh|powershell|terminal)\b|\bcmd\.exe\b|/bin/(ba|z)?sh\b",
            _F,
        ),
        "asks for shell access",
    ),
    (
        re.compile(
            r"\b(read|reads|reading|write|writes|writing|open|opens|delete|deletes|access|list)"
            r"\b[^.\n]{0,40}?\b(files?|file ?system|disk|folders?)\b",
            _F,
        ),
        "asks for file access",
    ),
]
_IPV4 = re.compile(r"(?<![\d.])(\d{1,3}(?:\.\d{1,3}){3})(?![\d.])")
_IPV6 = re.compile(r"\[([0-9A-Fa-f:.]+)\]")
_PRIVATE_NAMES = re.compile(
    r"\b(localhost|[\w-]+\.(localhost|local|internal)|metadata\.google\.internal)\b", _F
)
# Keys no declarative definition has: a place to smuggle code into metadata or parameters.
_CODE_KEYS = frozenset({"code", "script", "source_code", "exec", "eval", "python", "shell"})


def non_public(host: str) -> bool:
    """Whether a host (name or literal address) is private, loopback, link-local or another
    non-public address, or a local-only name."""
    host = host.strip("[]").lower().rstrip(".")
    if _PRIVATE_NAMES.fullmatch(host):
        return True
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        return False
    return not ip.is_global or ip.is_multicast


def _hosts_named(text: str) -> Iterator[str]:
    yield from _IPV4.findall(text)
    yield from _IPV6.findall(text)
    yield from (m.group(0) for m in _PRIVATE_NAMES.finditer(text))


def _private_reasons(text: str) -> list[str]:
    reasons = []
    for host in _hosts_named(text):
        try:
            private = non_public(host)
        except ValueError:
            private = False
        if private:
            reasons.append(f"names the non-public address {host}")
    return reasons


def description_reasons(text: str) -> list[str]:
    """Why a description (or feedback, or extra configuration) is refused; empty when not."""
    reasons = [reason for pattern, reason in [*_CODE, *_ASKS] if pattern.search(text)]
    reasons += _private_reasons(text)
    return list(dict.fromkeys(reasons))


def definition_reasons(spec: dict[str, Any]) -> list[str]:
    """Why a generated definition is refused; empty when not."""
    reasons: list[str] = []
    for path, key, value in _walk(spec, "spec"):
        if key is not None and key.lower() in _CODE_KEYS:
            reasons.append(f"{path}: definitions are declarative, no {key!r} field")
        if isinstance(value, str):
            reasons += [f"{path}: {r}" for p, r in _CODE if p.search(value)]
            reasons += [f"{path}: {r}" for r in _private_reasons(value)]
    http = spec.get("http")
    if isinstance(http, dict):
        reasons += _http_reasons(http)
    return list(dict.fromkeys(reasons))


def _http_reasons(http: dict[str, Any]) -> list[str]:
    reasons = []
    if http.get("allow_private_addresses"):
        reasons.append("spec.http.allow_private_addresses: generated tools reach public hosts only")
    url = http.get("url")
    if isinstance(url, str):
        host = urlsplit(re.sub(r"\{[^}]*\}", "x", url)).hostname or ""
        if host and non_public(host):
            reasons.append(f"spec.http.url: {host} is a private, loopback or link-local address")
    for i, entry in enumerate(http.get("allowed_hosts") or []):
        if isinstance(entry, str) and non_public(entry.removeprefix("*.")):
            reasons.append(f"spec.http.allowed_hosts[{i}]: {entry} is not a public host")
    return reasons


def _walk(value: Any, path: str, key: str | None = None) -> Iterator[tuple[str, str | None, Any]]:
    yield path, key, value
    if isinstance(value, dict):
        for k, v in value.items():
            yield from _walk(v, f"{path}.{k}", str(k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _walk(v, f"{path}[{i}]")
