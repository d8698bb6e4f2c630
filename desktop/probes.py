"""Readiness probes for desktop components: each asks the component itself, once, and never sleeps.

``Desktop`` calls them in a loop until they answer True or its start timeout passes.
"""

from __future__ import annotations

import socket
from pathlib import Path

from Xlib import X, Xatom
from Xlib import display as xdisplay
from Xlib import error as xerror
from Xlib.xobject.drawable import Window


def open_x(display: str) -> xdisplay.Display | None:
    try:
        return xdisplay.Display(display)
    except Exception:  # Xlib raises several unrelated types while the server comes up
        return None


def x_connects(display: str) -> bool:
    disp = open_x(display)
    if disp is None:
        return False
    disp.close()
    return True


def wm_ready(display: str) -> bool:
    """An EWMH window manager owns ``_NET_SUPPORTING_WM_CHECK`` on the root and on its check window."""
    disp = open_x(display)
    if disp is None:
        return False
    try:
        atom = disp.intern_atom("_NET_SUPPORTING_WM_CHECK")
        prop = disp.screen().root.get_full_property(atom, Xatom.WINDOW)
        if prop is None or not len(prop.value):
            return False
        check = disp.create_resource_object("window", int(prop.value[0]))
        child = check.get_full_property(atom, Xatom.WINDOW)
        return child is not None and len(child.value) > 0 and int(child.value[0]) == int(prop.value[0])
    except xerror.XError:
        return False
    finally:
        disp.close()


def window_mapped(display: str, wm_class: str) -> bool:
    """A viewable top-level (or WM-framed) window whose WM_CLASS contains ``wm_class`` (lower case)."""
    disp = open_x(display)
    if disp is None:
        return False
    try:
        return _find_viewable(disp.screen().root, wm_class, depth=3)
    finally:
        disp.close()


def _find_viewable(window: Window, wm_class: str, depth: int) -> bool:
    try:
        children = window.query_tree().children
    except xerror.XError:
        return False
    for child in children:
        try:
            attrs = child.get_attributes()
            classes = child.get_wm_class() or ()
        except xerror.XError:
            continue  # windows come and go while we look
        if attrs.map_state == X.IsViewable:
            if any(wm_class in c.lower() for c in classes):
                return True
            if depth > 1 and _find_viewable(child, wm_class, depth - 1):
                return True
    return False


def rfb_greets(path: Path) -> bool:
    """The VNC server on ``path`` greets with RFB 3.8 and, after our version, offers a security type.

    Going past the greeting matters: an x11vnc that refuses unix-socket clients still sends the greeting.
    """
    if not path.exists():
        return False
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
            if _recv_exactly(sock, 12) != b"RFB 003.008\n":
                return False
            sock.sendall(b"RFB 003.008\n")
            count = _recv_exactly(sock, 1)
        except OSError:
            return False
        return count not in (b"", b"\x00")  # 0 = refused, followed by a reason


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            return data
        data += chunk
    return data
