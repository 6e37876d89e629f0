"""Gear types: the contract (`Gear`, `Port`, `GearContext`) and the catalog of built-ins and plugins."""

from fluxmix.gears.base import ERROR_PORT, Gear, GearContext, Port
from fluxmix.gears.catalog import Catalog

__all__ = ["ERROR_PORT", "Catalog", "Gear", "GearContext", "Port"]
