"""Rigs for tests and the demo: ArduPilot SITL, swtpm, SoftHSM2, the virtual flight controller."""
