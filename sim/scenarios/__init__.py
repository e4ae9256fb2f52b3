"""What runs on the rigs: the demo and its steps, a whole airframe on one machine (rig), the
simulated companion boot."""
