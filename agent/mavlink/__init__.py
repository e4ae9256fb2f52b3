"""The MAVLink side: the link, MAVLink FTP, and the wire formats FlightSeal speaks to the FC and its peers."""
