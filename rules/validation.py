"""The API server's field checks, so that what it would reject is rejected here.

Each check returns a list of messages (empty when valid), in the wording of
k8s.io/apimachinery/pkg/util/validation where it matters to users.
"""

from __future__ import annotations

import re

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_QUALIFIED_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_PORT_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])*")


def dns_subdomain(value: str) -> list[str]:
    if len(value) > 253:
        return ["must be no more than 253 characters"]
    if not _DNS_SUBDOMAIN.fullmatch(value):
        return [
            "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
            "characters, '-' or '.', and must start and end with an alphanumeric character"
        ]
    return []


def dns_label(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if not _DNS_LABEL.fullmatch(value):
        return [
            "a lowercase RFC 1123 label must consist of lower case alphanumeric "
            "characters or '-', and must start and end with an alphanumeric character"
        ]
    return []


def qualified_name(value: str) -> list[str]:
    """A label key: an optional DNS-subdomain prefix and '/', then a name."""
    prefix, slash, name = value.rpartition("/")
    errors: list[str] = []
    if slash:
        if not prefix:
            errors.append("prefix part must be non-empty")
        else:
            errors += [f"prefix part {m}" for m in dns_subdomain(prefix)]
    if not name:
        errors.append("name part must be non-empty")
    elif len(name) > 63:
        errors.append("name part must be no more than 63 characters")
    elif not _QUALIFIED_NAME_PART.fullmatch(name):
        errors.append(
            "name part must consist of alphanumeric characters, '-', '_' or '.', "
            "and must start and end with an alphanumeric character"
        )
    return errors


def label_value(value: str) -> list[str]:
    if len(value) > 63:
        return ["must be no more than 63 characters"]
    if value and not _QUALIFIED_NAME_PART.fullmatch(value):
        return [
            "a valid label must be an empty string or consist of alphanumeric characters, "
            "'-', '_' or '.', and must start and end with an alphanumeric character"
        ]
    return []


def port_number(value: int) -> list[str]:
    if not 1 <= value <= 65535:
        return ["must be between 1 and 65535, inclusive"]
    return []


def port_name(value: str) -> list[str]:
    """An IANA_SVC_NAME, as container port names and named policy ports are."""
    if len(value) > 15:
        return ["must be no more than 15 characters"]
    if not _PORT_NAME.fullmatch(value):
        return ["must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"]
    if "--" in value:
        return ["must not contain consecutive hyphens"]
    if not re.search("[a-z]", value):
        return ["must contain at least one letter (a-z)"]
    return []
