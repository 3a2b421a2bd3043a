"""Drive a Python function app through the real ``azure-functions-runtime`` worker handlers, without a Functions host.

On Python 3.13+ the host talks gRPC to a small proxy worker, which calls the async handlers of the
``azure_functions_runtime`` package and hands them the generated protobuf classes as ``request.properties["protos"]``.
This module plays the proxy's part: a fake ``protos`` namespace (plain classes that keep their keyword arguments),
requests shaped like the host's, and the handlers' answers translated into what the host would conclude
(see docs/functions-host.md §12 (c)).

The runtime keeps module-level state (the function registry, the imported ``function_app`` module), so a process can
initialise one function app, once. Build one ``Worker`` per test process, e.g. in a module- or session-scoped fixture,
and ``close()`` it at the end.
"""

from __future__ import annotations

import asyncio
import json
import sys
import types
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import azure_functions_runtime as runtime  # type: ignore[import-untyped]

__all__ = ["FunctionInfo", "Invocation", "Worker", "protos"]


# --- fake protos --------------------------------------------------------------------------------------------------


class _Message:
    """A protobuf message stand-in: keeps its keyword arguments as attributes."""

    def __init__(self, **fields: Any) -> None:
        self.__dict__.update(fields)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.__dict__.items())})"


class TypedData(_Message):
    """Holds exactly one field of the ``data`` oneof (``string``, ``json``, ``bytes``, ...)."""

    def __init__(self, **fields: Any) -> None:
        if len(fields) != 1:
            raise TypeError(f"TypedData holds exactly one field, got {sorted(fields)}")
        super().__init__(**fields)

    def WhichOneof(self, group: str) -> str | None:  # noqa: N802 (protobuf API name)
        assert group == "data", group
        return next(iter(self.__dict__))


class StatusResult(_Message):
    Failure = 0
    Success = 1
    Cancelled = 2


class BindingInfo(_Message):
    undefined = 0
    out = 1
    inout = 2


setattr(BindingInfo, "in", 0)  # `in` is a keyword


class ParameterBinding(_Message):
    """An input or output parameter; ``rpc_data`` oneof is always ``data`` here (no shared memory)."""

    def WhichOneof(self, group: str) -> str | None:  # noqa: N802
        assert group == "rpc_data", group
        return "data" if getattr(self, "data", None) is not None else None


protos = types.SimpleNamespace(
    TypedData=TypedData,
    StatusResult=StatusResult,
    BindingInfo=BindingInfo,
    ParameterBinding=ParameterBinding,
    **{
        name: type(name, (_Message,), {})
        for name in (
            "WorkerInitResponse",
            "WorkerMetadata",
            "RpcException",
            "FunctionMetadataResponse",
            "RpcFunctionMetadata",
            "FunctionLoadResponse",
            "InvocationResponse",
            "RpcRetryOptions",
        )
    },
)


# --- results ------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FunctionInfo:
    """One entry of the worker's function metadata, as the host receives it."""

    name: str
    function_id: str
    bindings: list[dict[str, Any]]  # parsed from raw_bindings (the JSON the host reads)
    language: str
    script_file: str
    properties: dict[str, Any] = field(default_factory=dict)
    retry_options: Any = None

    def trigger(self) -> dict[str, Any]:
        (trigger,) = [b for b in self.bindings if b["type"].endswith("Trigger")]
        return trigger


@dataclass(frozen=True)
class Invocation:
    """What the host sees: Success (→ Service Bus message completed) or Failure (→ abandoned, redelivered)."""

    succeeded: bool
    exception_message: str | None  # the runtime's "<ExceptionType>: <message>" on Failure
    stack_trace: str | None = None


# --- the worker ---------------------------------------------------------------------------------------------------

_initialised_in_this_process: Path | None = None


class Worker:
    """Drives azure_functions_runtime's handlers as the host would, for one function app directory per process."""

    def __init__(self, app_dir: str | Path):
        self.app_dir = Path(app_dir).resolve()
        self._functions: dict[str, FunctionInfo] | None = None
        self._started_threadpool = False

    # lifecycle

    def init(self) -> None:
        """worker_init_request: imports and indexes function_app.py with the host's validations."""
        global _initialised_in_this_process
        if _initialised_in_this_process is not None:
            raise RuntimeError(
                f"azure_functions_runtime was already initialised in this process (for {_initialised_in_this_process});"
                " it keeps module-level state, so run one worker init per process"
            )
        _initialised_in_this_process = self.app_dir

        # The proxy worker puts the app directory first on sys.path before indexing.
        if str(self.app_dir) not in sys.path:
            sys.path.insert(0, str(self.app_dir))
        # ... and runs sync functions on the runtime's thread pool, which outlives single requests.
        if runtime.get_threadpool_executor() is None:
            runtime.start_threadpool_executor()
            self._started_threadpool = True

        request = types.SimpleNamespace(
            request=types.SimpleNamespace(
                worker_init_request=types.SimpleNamespace(
                    capabilities={},
                    function_app_directory=str(self.app_dir),
                    host_version="4.1040.0",
                    worker_directory=str(Path(runtime.__file__).parent),
                    log_categories={},
                )
            ),
            properties={"host": "127.0.0.1", "protos": protos},
        )
        response = asyncio.run(runtime.worker_init_request(request))
        if response.result.status != StatusResult.Success:
            raise AssertionError(response.result.exception.message)

    def close(self) -> None:
        """Stops what init() started (the runtime's thread pool). The process still can't be re-initialised."""
        if self._started_threadpool:
            runtime.stop_threadpool_executor()
            self._started_threadpool = False

    def __enter__(self) -> Worker:
        self.init()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # requests

    def functions(self) -> dict[str, FunctionInfo]:
        """functions_metadata_request: name -> FunctionInfo."""
        if self._functions is None:
            response = asyncio.run(runtime.functions_metadata_request(None))
            if response.result.status != StatusResult.Success:
                raise AssertionError(response.result.exception.message)
            self._functions = {
                md.name: FunctionInfo(
                    name=md.name,
                    function_id=md.function_id,
                    bindings=[json.loads(raw) for raw in md.raw_bindings],
                    language=md.language,
                    script_file=md.script_file,
                    properties=dict(md.properties),
                    retry_options=md.retry_options,
                )
                for md in (response.function_metadata_results or [])
            }
        return self._functions

    def invoke_service_bus(
        self,
        function_name: str,
        body: bytes | str,
        *,
        message_id: str = "m-1",
        delivery_count: int = 1,
        content_type: str | None = "application/json",
        correlation_id: str | None = None,
        application_properties: dict[str, Any] | None = None,
        enqueued_time: str = "2025-03-14T09:26:57.1234567Z",
        body_kind: str = "bytes",
        subject: str | None = None,
        sequence_number: int = 1,
    ) -> Invocation:
        """invocation_request for a Service Bus queue trigger, with input data and trigger metadata shaped like the
        host's: strings as ``string``; ints, dates and property bags as ``json`` (never ``int``); ``UserProperties``
        present (it selects single-message mode)."""
        info = self.functions()[function_name]
        trigger = info.trigger()
        assert trigger["type"] == "serviceBusTrigger", trigger

        body_bytes = body.encode("utf-8") if isinstance(body, str) else body
        if body_kind == "bytes":
            data = TypedData(bytes=body_bytes)
        elif body_kind == "string":
            data = TypedData(string=body_bytes.decode("utf-8"))
        elif body_kind == "json":
            data = TypedData(json=body_bytes.decode("utf-8"))
        else:
            raise ValueError(f"body_kind must be 'bytes', 'string' or 'json', not {body_kind!r}")

        properties = json.dumps(application_properties or {})
        metadata = {
            "MessageId": TypedData(string=message_id),
            "DeliveryCount": TypedData(json=json.dumps(delivery_count)),
            "EnqueuedTimeUtc": TypedData(json=json.dumps(enqueued_time)),
            "ExpiresAtUtc": TypedData(json=json.dumps("9999-12-31T23:59:59.9999999Z")),
            "SequenceNumber": TypedData(json=json.dumps(sequence_number)),
            "LockToken": TypedData(string=str(uuid.uuid4())),
            "ApplicationProperties": TypedData(json=properties),
            "UserProperties": TypedData(json=properties),
            "sys": TypedData(
                json=json.dumps({"MethodName": function_name, "UtcNow": enqueued_time, "RandGuid": str(uuid.uuid4())})
            ),
        }
        if content_type is not None:
            metadata["ContentType"] = TypedData(string=content_type)
        if correlation_id is not None:
            metadata["CorrelationId"] = TypedData(string=correlation_id)
        if subject is not None:
            metadata["Subject"] = TypedData(string=subject)
            metadata["Label"] = TypedData(string=subject)

        return self._invoke(info, trigger, data, metadata)

    def invoke_service_bus_batch(
        self,
        function_name: str,
        bodies: list[bytes],
        *,
        delivery_counts: list[int] | None = None,
        message_ids: list[str] | None = None,
        enqueued_time: str = "2025-03-14T09:26:57.1234567Z",
    ) -> Invocation:
        """invocation_request for a ``cardinality="many"`` trigger, as the host sends a batch: the bodies as
        ``collection_bytes`` and each metadata field as a JSON array (``UserPropertiesArray`` selects batch mode)."""
        info = self.functions()[function_name]
        trigger = info.trigger()
        assert str(trigger.get("cardinality")).lower() == "many", trigger
        n = len(bodies)
        ids = message_ids or [f"m-{i}" for i in range(n)]
        counts = delivery_counts or [1] * n
        data = TypedData(collection_bytes=types.SimpleNamespace(bytes=list(bodies)))
        metadata = {
            "MessageIdArray": TypedData(json=json.dumps(ids)),
            "DeliveryCountArray": TypedData(json=json.dumps(counts)),
            "EnqueuedTimeUtcArray": TypedData(json=json.dumps([enqueued_time] * n)),
            "ContentTypeArray": TypedData(json=json.dumps(["application/json"] * n)),
            "SequenceNumberArray": TypedData(json=json.dumps(list(range(1, n + 1)))),
            "LockTokenArray": TypedData(json=json.dumps([str(uuid.uuid4()) for _ in range(n)])),
            "ApplicationPropertiesArray": TypedData(json=json.dumps([{}] * n)),
            "UserPropertiesArray": TypedData(json=json.dumps([{}] * n)),
            "sys": TypedData(
                json=json.dumps({"MethodName": function_name, "UtcNow": enqueued_time, "RandGuid": str(uuid.uuid4())})
            ),
        }
        return self._invoke(info, trigger, data, metadata)

    def invoke_timer(
        self, function_name: str, *, past_due: bool = False, now: str = "2025-12-01T02:00:00Z"
    ) -> Invocation:
        """invocation_request for a timer trigger, as the host sends it: the ``TimerInfo`` as ``json`` (``Schedule``,
        ``ScheduleStatus``, ``IsPastDue``; azure.functions.timer.TimerRequestConverter reads those three)."""
        info = self.functions()[function_name]
        trigger = info.trigger()
        assert trigger["type"] == "timerTrigger", trigger
        timer_info = {
            "Schedule": {"AdjustForDST": True},
            "ScheduleStatus": {"Last": "0001-01-01T00:00:00", "Next": now, "LastUpdated": "0001-01-01T00:00:00"},
            "IsPastDue": past_due,
        }
        metadata = {
            "sys": TypedData(
                json=json.dumps({"MethodName": function_name, "UtcNow": now, "RandGuid": str(uuid.uuid4())})
            )
        }
        return self._invoke(info, trigger, TypedData(json=json.dumps(timer_info)), metadata)

    def _invoke(
        self, info: FunctionInfo, trigger: dict[str, Any], data: TypedData, metadata: dict[str, Any]
    ) -> Invocation:
        invocation_id = str(uuid.uuid4())
        request = types.SimpleNamespace(
            request=types.SimpleNamespace(
                invocation_request=types.SimpleNamespace(
                    invocation_id=invocation_id,
                    function_id=info.function_id,
                    input_data=[ParameterBinding(name=trigger["name"], data=data)],
                    trigger_metadata=metadata,
                    trace_context=types.SimpleNamespace(
                        trace_parent=f"00-{uuid.uuid4().hex}-{uuid.uuid4().hex[:16]}-01",
                        trace_state="",
                        attributes={},
                    ),
                    retry_context=types.SimpleNamespace(retry_count=0, max_retry_count=0, exception=None),
                )
            ),
            properties={"host": "127.0.0.1", "protos": protos},
        )
        response = asyncio.run(runtime.invocation_request(request))
        assert response.invocation_id == invocation_id
        if response.result.status == StatusResult.Success:
            return Invocation(succeeded=True, exception_message=None)
        exception = response.result.exception
        return Invocation(succeeded=False, exception_message=exception.message, stack_trace=exception.stack_trace)
