"""Mailgate: an email-first discussion service.

The package holds the domain (lists, members, discussions, posts), the SMTP gateway and
the pure stages of the inbound pipeline. ``digests`` and ``worker`` build on it; it
imports neither except in its composition roots (``mailgate.cli``).
"""

__version__ = "0.1.0"
