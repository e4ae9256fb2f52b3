"""Collectors: each measures one part of the airframe over the link and yields Measurements.

``measure(link, options)`` runs them all and returns an :class:`Inventory`: the measurements,
plus a ``measurement-missing`` reason for everything that could not be measured.
"""

from agent.collectors.base import CollectError, Inventory, MeasureOptions
from agent.collectors.imagecache import ImageCache
from agent.collectors.measure import measure

__all__ = ["CollectError", "ImageCache", "Inventory", "MeasureOptions", "measure"]
