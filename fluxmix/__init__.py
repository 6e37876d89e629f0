"""fluxmix: declarative processing topologies from a content-addressed store, run by a mixer daemon."""

from fluxmix.errors import FluxmixError, Problem, UserError, ValidationError
from fluxmix.message import Message
from fluxmix.scenario import Endpoint, GearSpec, Scenario, WireSpec

__version__ = "0.1.0"

__all__ = [
    "Endpoint",
    "FluxmixError",
    "GearSpec",
    "Message",
    "Problem",
    "Scenario",
    "UserError",
    "ValidationError",
    "WireSpec",
    "__version__",
]
