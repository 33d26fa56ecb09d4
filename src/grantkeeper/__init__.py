"""grantkeeper keeps OAuth connections alive.

It refreshes before expiry, tells transient trouble from real loss of access, warns the user before a
connection breaks and pauses the workflows that depend on it when it does.
"""

__version__ = "0.1.0"
