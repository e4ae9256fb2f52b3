"""python -m agent: the flightseal command."""

from agent.cli import main

main()
