"""The errors of the libvirt shell, and the one place that maps libvirt's codes onto them.

Every error keeps libvirt's own message and code, so what reaches a status condition or
an Event is what libvirt said.
"""

from __future__ import annotations

import libvirt


class HypervisorError(Exception):
    """Base of every error this shell raises; `libvirt_code` is libvirt's, if any."""

    def __init__(self, message: str, *, libvirt_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.libvirt_code = libvirt_code


class Unreachable(HypervisorError):  # noqa: N818 (names from the design)
    """libvirtd cannot be reached (after retrying with backoff)."""


class DomainNotFound(HypervisorError):  # noqa: N818 (names from the design)
    """The domain does not exist (or vanished behind our back)."""


class XMLRejected(HypervisorError):  # noqa: N818 (names from the design)
    """libvirt refused the domain XML; the message is libvirt's."""


class DiskImageMissing(HypervisorError):  # noqa: N818 (names from the design)
    """A disk image, kernel or initrd the domain needs does not exist."""


class HardLimitBelowUsage(HypervisorError):  # noqa: N818 (names from the design)
    """A new memory hard_limit is below what the running VM already uses."""

    def __init__(self, message: str, *, limit_bytes: int, usage_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes
        self.usage_bytes = usage_bytes


class InvalidState(HypervisorError):  # noqa: N818 (names from the design)
    """The operation does not fit the domain's current state."""


class Unsupported(HypervisorError):  # noqa: N818 (names from the design)
    """The connection's driver cannot do this (e.g. the test driver and scheduler params)."""


_XML_CODES = frozenset(
    {
        libvirt.VIR_ERR_XML_ERROR,
        libvirt.VIR_ERR_XML_DETAIL,
        libvirt.VIR_ERR_CONFIG_UNSUPPORTED,
        libvirt.VIR_ERR_XML_INVALID_SCHEMA,
    }
)
_UNSUPPORTED_CODES = frozenset({libvirt.VIR_ERR_NO_SUPPORT, libvirt.VIR_ERR_ARGUMENT_UNSUPPORTED})
_UNREACHABLE_CODES = frozenset({libvirt.VIR_ERR_NO_CONNECT, libvirt.VIR_ERR_RPC})


def error_class(code: int, message: str) -> type[HypervisorError]:
    """Which of our errors a libvirt error code (and, for one case, its message) is."""
    if code == libvirt.VIR_ERR_NO_DOMAIN:
        return DomainNotFound
    if code in _XML_CODES:
        return XMLRejected
    if code in _UNSUPPORTED_CODES or (
        code == libvirt.VIR_ERR_INVALID_ARG and "unsupported flags" in message
    ):
        return Unsupported
    if code == libvirt.VIR_ERR_OPERATION_INVALID:
        return InvalidState
    if code in _UNREACHABLE_CODES:
        return Unreachable
    return HypervisorError


def translate(e: libvirt.libvirtError) -> HypervisorError:
    """Map a libvirtError onto our hierarchy, keeping libvirt's message."""
    code = e.get_error_code()
    message = e.get_error_message() or str(e)
    return error_class(code, message)(message, libvirt_code=code)
