"""The NRI plugin's errors, on the remote side of `watcher.errors`: the runtime misbehaved."""

from __future__ import annotations

from watcher.errors import RemoteError


class ProtocolError(RemoteError):
    """The peer broke the wire protocol (ttrpc framing, NRI's multiplexer): an oversized
    frame, bytes that are no frame at all. The byte stream cannot be trusted past that
    point: the connection is closed, and the plugin connects again."""


class ConnectionCut(RemoteError):
    """The connection ended inside a frame (ttrpc's or the multiplexer's). Not a protocol
    error: it is what a runtime killed while writing leaves, so the plugin takes it as a
    lost connection and connects again."""


class RegistrationError(RemoteError):
    """The runtime refused the plugin's `RegisterPlugin`, or did not finish registering it
    (no answer, no `Configure`) in time."""


class LateReply(RemoteError):
    """A reply went out after the runtime's deadline for it: the runtime has given up on the
    call (containerd drops the plugin, or after a late `Synchronize` keeps it connected but
    never sends another event), so only a new registration brings the events back."""


class BadMessage(RemoteError):
    """A well-framed call whose payload is not the message its method takes. The framing is
    intact, so the connection stays: the call is answered as any other (an observer must
    never fail a pod operation) and logged."""
