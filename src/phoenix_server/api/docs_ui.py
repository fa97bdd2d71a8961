"""The API's own documentation pages, ``/docs`` (Swagger UI) and ``/redoc``, served offline.

FastAPI's built-in pages load their JavaScript and CSS from a CDN, so on a machine without
internet they are blank. Here the same pages point at copies shipped by the
``fastapi-offline`` package, mounted under :data:`ASSETS`; every URL in them is this
server's own. Create the app with ``docs_url=None, redoc_url=None`` and call :func:`install`.
"""

from __future__ import annotations

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import (
    get_redoc_html,
    get_swagger_ui_html,
    get_swagger_ui_oauth2_redirect_html,
)
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

ASSETS = "/static/swagger"
"""Where the asset files are served. The dashboard's ``/static/{name}`` takes one path
segment only, so it never answers for a file below this folder."""
OAUTH2_REDIRECT = "/docs/oauth2-redirect"

router = APIRouter(include_in_schema=False)


def install(app: FastAPI) -> None:
    """Serve the asset files and the pages on ``app``."""
    app.mount(
        ASSETS,
        StaticFiles(packages=[("fastapi_offline", "static")]),
        name="swagger-assets",
    )
    app.include_router(router)


def _asset(request: Request, name: str) -> str:
    # root_path: behind a proxy that serves Phoenix below a prefix, links need the prefix.
    return f"{request.scope.get('root_path', '')}{ASSETS}/{name}"


def _openapi_url(request: Request) -> str:
    return f"{request.scope.get('root_path', '')}{request.app.openapi_url}"


@router.get("/docs")
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - Swagger UI",
        oauth2_redirect_url=OAUTH2_REDIRECT,
        swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset(request, "swagger-ui.css"),
        swagger_favicon_url=_asset(request, "favicon.png"),
    )


@router.get(OAUTH2_REDIRECT)
async def swagger_ui_oauth2_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    return get_redoc_html(
        openapi_url=_openapi_url(request),
        title=f"{request.app.title} - ReDoc",
        redoc_js_url=_asset(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset(request, "favicon.png"),
        with_google_fonts=False,  # the fonts come from Google: the page falls back to local ones
    )
