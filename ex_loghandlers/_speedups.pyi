import logging
from types import ModuleType
from typing import AbstractSet, Any, Callable, Dict, List, Optional, Set, Tuple

LAYOUT: int

def usable() -> bool: ...
def configure(
    record_type: type,
    stdlib_get_message: Optional[Callable[[logging.LogRecord], str]],
    common_keys: Tuple[str, ...],
    common_end: Tuple[object],
    no_args_end: Tuple[object],
    known_conversions: Dict[str, Optional[Tuple[str, ...]]],
    native_types: AbstractSet[object],
    fallback: Callable[[logging.LogRecord], Optional[Tuple[Tuple[Any, ...], int]]],
    snapshot_overhead: int,
    arg_overhead: int,
    number_text: int,
    wide_text_check: int,
    /,
) -> None: ...
def configure_exceptions(
    style_cache: List[Tuple[Any, Any]],
    traceback_exception: type,
    linecache: ModuleType,
    inline: object,
    exception_end: object,
    plain_kind: int,
    frame_overhead: int,
    /,
) -> None: ...
def common_record(record: logging.LogRecord, /) -> Optional[Tuple[Tuple[Any, ...], int]]: ...

class FastHandle:
    def __init__(
        self,
        handler: logging.Handler,
        slow_handle: Callable[[Any, logging.LogRecord], Any],
        emit: Callable[[Any, logging.LogRecord], None],
        get_ident: Callable[[], int],
        delivery: Any,
        inside: Set[int],
        aside: Any,
        workers: Set[int],
        buffer: Any,
        lock: Any,
        items: Any,
        sizes: Any,
        max_items: int,
        max_bytes: int,
        batch_size: int,
        /,
    ) -> None: ...
    def __call__(self, record: logging.LogRecord, /) -> Any: ...

class WireFields:
    def __init__(
        self,
        template: Dict[str, Any],
        other_keys: Tuple[str, ...],
        args_key: str,
        message_key: str,
        pid_key: str,
        python: Callable[[Any], Dict[str, Any]],
        process_index: int,
        msg_index: int,
        /,
        *,
        seq_key: str = ...,
        literals: Tuple[bytes, ...] = ...,
        sources: Tuple[int, ...] = ...,
    ) -> None: ...
    def __call__(self, item: Any, /) -> Dict[str, Any]: ...
    def ready(self, item: Any, seq: int, /) -> Any: ...

class Ready:
    def fields(self) -> Dict[str, Any]: ...

def write_json(
    records: List[Any], separator: bytes, dumps: Optional[Callable[[Any], bytes]], /
) -> Optional[bytes]: ...

def flat_plain(fields: object, /) -> bool: ...
def frames_of(
    tb: Any, cache: Any, lazycache: Callable[..., Any], /
) -> Tuple[Any, ...]: ...
