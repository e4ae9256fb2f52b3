"""The arming gate: the client that tells the FC's Lua gate the verdict, its key, and installing the script."""
