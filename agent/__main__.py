"""python -m agent: the flightseal command."""

from agent.cli.main import main

main()
