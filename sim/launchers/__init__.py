"""Start and stop the real components a test or the demo needs: SITL, swtpm, SoftHSM2, MAVProxy, a network namespace."""
