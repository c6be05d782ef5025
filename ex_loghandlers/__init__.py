"""ex_loghandlers: ship ``logging`` records to a central log server over HTTP.

``ExHTTPHandler`` queues each record in microseconds and delivers it from a background thread,
in batches, with retries, counting every record it could not deliver.
"""

from ._config import Config
from ._handler import ExHTTPHandler
from ._lifecycle import flush_on_sigterm
from ._stats import Stats

__version__ = "0.2.0"

__all__ = ["Config", "ExHTTPHandler", "Stats", "__version__", "flush_on_sigterm"]
