"""The MAVLink side: the link, MAVLink FTP, and the wire formats FlightSeal speaks to the FC and its peers.

pymavlink picks its wire version from ``MAVLINK20`` when ``mavutil`` is first imported, and the
gate takes MAVLink2 only: so the room sets it before any of its modules imports pymavlink.
"""

import os

os.environ.setdefault("MAVLINK20", "1")
