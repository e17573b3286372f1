from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PlanStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PLAN_STATUS_UNSPECIFIED: _ClassVar[PlanStatus]
    PLAN_STATUS_IMPROVED: _ClassVar[PlanStatus]
    PLAN_STATUS_OPTIMAL: _ClassVar[PlanStatus]
    PLAN_STATUS_NO_IMPROVEMENT: _ClassVar[PlanStatus]
PLAN_STATUS_UNSPECIFIED: PlanStatus
PLAN_STATUS_IMPROVED: PlanStatus
PLAN_STATUS_OPTIMAL: PlanStatus
PLAN_STATUS_NO_IMPROVEMENT: PlanStatus

class PlanRequest(_message.Message):
    __slots__ = ("snapshot_json", "time_limit_seconds", "workers", "max_evictions", "max_moves", "pin_bare_pods", "seed")
    SNAPSHOT_JSON_FIELD_NUMBER: _ClassVar[int]
    TIME_LIMIT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    WORKERS_FIELD_NUMBER: _ClassVar[int]
    MAX_EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    MAX_MOVES_FIELD_NUMBER: _ClassVar[int]
    PIN_BARE_PODS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    snapshot_json: bytes
    time_limit_seconds: float
    workers: int
    max_evictions: int
    max_moves: int
    pin_bare_pods: bool
    seed: int
    def __init__(self, snapshot_json: _Optional[bytes] = ..., time_limit_seconds: _Optional[float] = ..., workers: _Optional[int] = ..., max_evictions: _Optional[int] = ..., max_moves: _Optional[int] = ..., pin_bare_pods: _Optional[bool] = ..., seed: _Optional[int] = ...) -> None: ...

class Assignment(_message.Message):
    __slots__ = ("pod", "node")
    POD_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    pod: str
    node: str
    def __init__(self, pod: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class Binding(_message.Message):
    __slots__ = ("pod", "node")
    POD_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    pod: str
    node: str
    def __init__(self, pod: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class Move(_message.Message):
    __slots__ = ("pod", "from_node", "to_node")
    POD_FIELD_NUMBER: _ClassVar[int]
    FROM_NODE_FIELD_NUMBER: _ClassVar[int]
    TO_NODE_FIELD_NUMBER: _ClassVar[int]
    pod: str
    from_node: str
    to_node: str
    def __init__(self, pod: _Optional[str] = ..., from_node: _Optional[str] = ..., to_node: _Optional[str] = ...) -> None: ...

class Eviction(_message.Message):
    __slots__ = ("pod", "node")
    POD_FIELD_NUMBER: _ClassVar[int]
    NODE_FIELD_NUMBER: _ClassVar[int]
    pod: str
    node: str
    def __init__(self, pod: _Optional[str] = ..., node: _Optional[str] = ...) -> None: ...

class PlacedCount(_message.Message):
    __slots__ = ("priority", "pods")
    PRIORITY_FIELD_NUMBER: _ClassVar[int]
    PODS_FIELD_NUMBER: _ClassVar[int]
    priority: int
    pods: int
    def __init__(self, priority: _Optional[int] = ..., pods: _Optional[int] = ...) -> None: ...

class PlanResponse(_message.Message):
    __slots__ = ("status", "assignments", "bindings", "moves", "evictions", "placed_before", "placed_after", "proven_optimal", "solve_seconds", "unplaced_reasons", "stats_json", "placements_proven_optimal")
    class UnplacedReasonsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: str
        value: str
        def __init__(self, key: _Optional[str] = ..., value: _Optional[str] = ...) -> None: ...
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    BINDINGS_FIELD_NUMBER: _ClassVar[int]
    MOVES_FIELD_NUMBER: _ClassVar[int]
    EVICTIONS_FIELD_NUMBER: _ClassVar[int]
    PLACED_BEFORE_FIELD_NUMBER: _ClassVar[int]
    PLACED_AFTER_FIELD_NUMBER: _ClassVar[int]
    PROVEN_OPTIMAL_FIELD_NUMBER: _ClassVar[int]
    SOLVE_SECONDS_FIELD_NUMBER: _ClassVar[int]
    UNPLACED_REASONS_FIELD_NUMBER: _ClassVar[int]
    STATS_JSON_FIELD_NUMBER: _ClassVar[int]
    PLACEMENTS_PROVEN_OPTIMAL_FIELD_NUMBER: _ClassVar[int]
    status: PlanStatus
    assignments: _containers.RepeatedCompositeFieldContainer[Assignment]
    bindings: _containers.RepeatedCompositeFieldContainer[Binding]
    moves: _containers.RepeatedCompositeFieldContainer[Move]
    evictions: _containers.RepeatedCompositeFieldContainer[Eviction]
    placed_before: _containers.RepeatedCompositeFieldContainer[PlacedCount]
    placed_after: _containers.RepeatedCompositeFieldContainer[PlacedCount]
    proven_optimal: bool
    solve_seconds: float
    unplaced_reasons: _containers.ScalarMap[str, str]
    stats_json: str
    placements_proven_optimal: bool
    def __init__(self, status: _Optional[_Union[PlanStatus, str]] = ..., assignments: _Optional[_Iterable[_Union[Assignment, _Mapping]]] = ..., bindings: _Optional[_Iterable[_Union[Binding, _Mapping]]] = ..., moves: _Optional[_Iterable[_Union[Move, _Mapping]]] = ..., evictions: _Optional[_Iterable[_Union[Eviction, _Mapping]]] = ..., placed_before: _Optional[_Iterable[_Union[PlacedCount, _Mapping]]] = ..., placed_after: _Optional[_Iterable[_Union[PlacedCount, _Mapping]]] = ..., proven_optimal: _Optional[bool] = ..., solve_seconds: _Optional[float] = ..., unplaced_reasons: _Optional[_Mapping[str, str]] = ..., stats_json: _Optional[str] = ..., placements_proven_optimal: _Optional[bool] = ...) -> None: ...
