"""FlightSeal's pure attestation core.

Bytes in, decisions out: this package reads only the bytes it is handed and never touches
hardware, files or MAVLink. Everything that decides whether a drone may fly lives here so it
can be tested exhaustively and reviewed in one place.
"""
