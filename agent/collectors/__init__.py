"""Collectors: each measures one part of the airframe over the link and yields Measurements."""
