"""deskpilot: a computer-use agent service.

Packages, lowest floor first (arrows only point down):
  deskpilot  settings, errors, the command line (shared by every floor)
  desktop    the virtual desktop: X11 capture and input, tools, the desktop daemon
  agent      the model loop: client, history, retries, budgets, approval policy
  web        the FastAPI service, persistence, auth, live viewer, takeover
"""

__version__ = "0.1.0"
