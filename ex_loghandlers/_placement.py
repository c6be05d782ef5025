"""Where in its batch each record of an encoded payload is.

A batch taken from the spool that is cut short at close lets go of exactly the rows whose
records were settled, and the server may settle them in any order: Elasticsearch stores some
and asks for others again, records that cannot be encoded fail before the rest are sent. So
each payload goes with the positions of its records in the batch. Encoders put each record
they are given in exactly one payload, as it is or as a copy made to be sent (plain fields,
texts cut to fit ``max_batch_bytes``), and the copies come in the order of their records: a
record is found by identity, a copy takes the place of the first record not found. Pure: no I/O.
"""

from __future__ import annotations

from operator import is_
from typing import Dict, List, Optional, Sequence, Set

from ._wire import Payload, Record


def placed(
    given: Sequence[Record], at: Sequence[Optional[int]], payloads: Sequence[Payload]
) -> List[List[Optional[int]]]:
    """The position of each record of each payload, ``payloads`` being the encoding of
    ``given`` and ``at`` the positions of ``given``; None for a record found nowhere (none, as
    long as the encoders keep to the rule above)."""
    if (
        len(payloads) == 1
        and len(payloads[0].records) == len(given)
        and all(map(is_, payloads[0].records, given))
    ):
        return [list(at)]  # the common case, one request of every record as given: no lookups
    index: Dict[int, int] = {id(record): i for i, record in enumerate(given)}
    found = [[index.pop(id(record), None) for record in payload.records] for payload in payloads]
    claimed: Set[Optional[int]] = {i for indexes in found for i in indexes}
    spare = iter([i for i in range(len(given)) if i not in claimed])

    def place(i: Optional[int]) -> Optional[int]:
        if i is None:  # a copy: of the first record not found
            i = next(spare, None)
        return None if i is None else at[i]

    return [[place(i) for i in indexes] for indexes in found]
