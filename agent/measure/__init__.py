"""Collectors: each measures one part of the airframe over the link and yields Measurements.

``measure(link, options)`` runs them all and returns an :class:`Inventory`: the measurements,
plus a ``measurement-missing`` reason for everything that could not be measured.
"""

from agent.measure.base import CollectError, Inventory, MeasureOptions
from agent.measure.collect import measure
from agent.measure.imagecache import ImageCache

__all__ = ["CollectError", "ImageCache", "Inventory", "MeasureOptions", "measure"]
