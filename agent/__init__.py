"""The onboard agent: MAVLink link, collectors, the arming gate, the daemon and the CLI."""

__version__ = "0.1.0"
