#!/usr/bin/env bash
# Issue 11's full fuzzing campaign: 100,000 hostile MAVLink frames at a running agent (both ways, real Lua
# gate on the virtual FC) and 100,000 generated files at every parser; prints the counts tables.
# Smaller runs: FLIGHTSEAL_FUZZ_FRAMES=N FLIGHTSEAL_FUZZ_FILES=N bash scripts/fuzz.sh
# Opt-in kinds: FLIGHTSEAL_FUZZ_OPT_IN=armed-spoof,forgery
set -euo pipefail
cd "$(dirname "$0")/.."
export FLIGHTSEAL_FUZZ_CAMPAIGN=1
exec .venv/bin/python -m pytest -m slow tests/test_fuzz_campaign.py -s -p no:cacheprovider "$@"
