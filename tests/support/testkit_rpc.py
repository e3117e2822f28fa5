"""Typed rpc handles of tests/support/testkit.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from schemas.contracts import Streaming, Unary
from tests.support import testkit_pb2


class EchoService:
    """The `echo` component (aifleet.testkit.EchoService)."""

    Echo: Final = Unary(
        "echo",
        "echo",
        testkit_pb2.EchoRequest,
        testkit_pb2.EchoReply,
    )
    EchoStream: Final = Streaming(
        "echo",
        "echo_stream",
        testkit_pb2.EchoRequest,
        testkit_pb2.EchoReply,
    )


class JobRecorderService:
    """The `job_recorder` component (aifleet.testkit.JobRecorderService)."""

    Record: Final = Unary(
        "job_recorder",
        "record",
        testkit_pb2.RecordJob,
        testkit_pb2.RecordResult,
    )
