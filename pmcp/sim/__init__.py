"""A Proxmox VE API simulator faithful to the official schema (see README.md in this package).

Nothing is imported here, so ``pmcp sim pvesh`` and ``pmcp --help`` stay light.
"""
