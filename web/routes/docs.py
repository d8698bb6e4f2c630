"""``/docs`` (Swagger UI) and ``/redoc``: FastAPI's pages, served with a Content-Security-Policy.

The pages load their scripts and styles from cdn.jsdelivr.net (as FastAPI's defaults do) and Swagger UI has
one inline script; that script is allowed by its SHA-256, computed from the page itself, so the CSP stays
exact if FastAPI changes it. Nothing else may run, and no other site may frame the pages.
"""

from __future__ import annotations

import base64
import hashlib
import re

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse

router = APIRouter(include_in_schema=False)
CDN = "https://cdn.jsdelivr.net"
_INLINE_SCRIPT = re.compile(r"<script>(.*?)</script>", re.DOTALL)


def docs_csp(html: str) -> str:
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(body.encode()).digest()).decode() + "'"
        for body in _INLINE_SCRIPT.findall(html)
    )
    return (
        f"default-src 'none'; script-src {CDN} {hashes}; style-src {CDN} https://fonts.googleapis.com "
        "'unsafe-inline'; font-src https://fonts.gstatic.com; img-src 'self' data: https://fastapi.tiangolo.com; "
        "connect-src 'self'; worker-src blob:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


def _with_csp(page: HTMLResponse) -> HTMLResponse:
    html = bytes(page.body).decode()
    return HTMLResponse(html, headers={
        "Content-Security-Policy": docs_csp(html), "X-Frame-Options": "DENY", "Cache-Control": "no-cache",
    })


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _with_csp(get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - API"))


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    app: FastAPI = request.app
    return _with_csp(get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc"))
