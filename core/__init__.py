"""Torch-free settings and contracts shared by service, trainer and models."""
