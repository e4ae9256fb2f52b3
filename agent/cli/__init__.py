"""The `flightseal` command: one module per command group, the central exit-code map in main.py."""
