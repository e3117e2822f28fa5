"""Typed rpc handles of tests/support/testkit.proto, written by `make proto`: do not edit."""

from __future__ import annotations

from typing import Final

from google.protobuf import empty_pb2

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


class ShelfService:
    """The `shelf` component (aifleet.testkit.ShelfService)."""

    CreateShelf: Final = Unary(
        "shelf",
        "create_shelf",
        testkit_pb2.CreateShelfRequest,
        testkit_pb2.Shelf,
    )
    GetShelf: Final = Unary(
        "shelf",
        "get_shelf",
        testkit_pb2.ShelfRef,
        testkit_pb2.Shelf,
    )
    SortShelf: Final = Unary(
        "shelf",
        "sort_shelf",
        testkit_pb2.ShelfRef,
        testkit_pb2.SortAccepted,
    )
    DeleteShelf: Final = Unary(
        "shelf",
        "delete_shelf",
        testkit_pb2.ShelfRef,
        empty_pb2.Empty,
    )
