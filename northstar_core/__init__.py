"""Northstar durable engines: the pure-Python core (domain, ports, use-cases, routing).

The core imports no cloud SDK and no web framework; adapters implement its ports and the
HTTP shell maps requests onto its use-cases.
"""

from northstar_core.engines import Engines, EngineSettings
from northstar_core.errors import NorthstarError
from northstar_core.identity import RequestContext
from northstar_core.kernel.paging import Page

__all__ = ["EngineSettings", "Engines", "NorthstarError", "Page", "RequestContext"]
