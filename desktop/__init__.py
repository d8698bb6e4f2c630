"""The virtual desktop and everything that touches X11. Uses neither ``agent`` nor ``web``."""
