"""Command-line front end, installed as smoothprobe.cli."""
