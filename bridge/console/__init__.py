"""The web console under ``/ui/`` on the daemon's ``[bridge] http`` port.

Server-rendered pages over the same store calls as the CLI's inspection verbs, and the CLI's
operator actions as POST forms. ``app`` holds the routes, ``views`` the pure view models,
``sparkline`` the SVG drawing, ``security`` the token, CSRF and header rules, ``actions`` the
operations. This module imports nothing heavy: the configuration imports ``security``.
"""
