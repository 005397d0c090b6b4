"""Core records and services shared by every lifecycle phase.

Config, storage, inventory, findings, audit log, keys and events live here.
"""
