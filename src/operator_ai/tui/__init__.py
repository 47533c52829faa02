"""The one-command run and the demo: every part of the loop, supervised in one process."""
