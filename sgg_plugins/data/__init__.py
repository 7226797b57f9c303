"""Datasets written in the hosts' file formats."""
