"""``/docs`` and ``/redoc`` work without internet: over real HTTP against a real ``phoenix
serve`` (with API tokens, as a team runs it), every URL the pages load is the server's own
and answers with the file it names; in Debian's Chromium, with every request that leaves
the server refused, Swagger UI draws the API."""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from html.parser import HTMLParser

import pytest

from tests.support import PhoenixServer

pytestmark = pytest.mark.e2e

TOKEN = "docs-viewer-0123456789"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class _Links(HTMLParser):
    """Every URL a page names: ``src``, ``href``, ReDoc's ``spec-url``, and those in inline scripts."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [
            value for name, value in attrs if name in ("src", "href", "spec-url") and value
        ]
        self._in_script = tag == "script"

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False

    def handle_data(self, data: str) -> None:
        if self._in_script:
            self.urls += re.findall(r"""['"]((?:https?:)?//[^'"]+|/[^'"\s]*)['"]""", data)


def links_of(html: str) -> list[str]:
    parser = _Links()
    parser.feed(html)
    return parser.urls


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PhoenixServer]:
    root = tmp_path_factory.mktemp("docs")
    config = root / "phoenix.yaml"
    config.write_text("services: []\n")
    phoenix = PhoenixServer(
        config, root / "var", env={"PHOENIX_API_TOKENS": f"viewer:viewer:{TOKEN}"}
    ).start()
    yield phoenix
    phoenix.close()


# The type each asset must be served as; .js is text/javascript or the older
# application/javascript, depending on the system's MIME table.
ASSET_TYPES = {
    ".js": ("text/javascript", "application/javascript"),
    ".css": ("text/css",),
    ".png": ("image/png",),
}


@pytest.mark.parametrize(
    ("page", "assets"),
    [
        ("/docs", {"swagger-ui-bundle.js", "swagger-ui.css", "favicon.png"}),
        ("/redoc", {"redoc.standalone.js", "favicon.png"}),
    ],
)
def test_a_docs_page_loads_only_this_servers_files(
    server: PhoenixServer, page: str, assets: set[str]
) -> None:
    response = server.get(page)  # no token: the page itself is public, as the API's schema is
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/html")
    urls = links_of(response.text)
    outside = [url for url in urls if re.match(r"(https?:)?//", url)]
    assert outside == [], f"{page} loads from outside the server: {outside}"
    local = {url.rsplit("/", 1)[-1] for url in urls if url.startswith("/static/swagger/")}
    assert local == assets
    assert "/openapi.json" in urls
    for name in sorted(local):
        asset = server.get(f"/static/swagger/{name}")
        assert asset.status_code == 200, f"{name}: {asset.status_code}"
        kind = asset.headers["content-type"].split(";")[0]
        assert kind in ASSET_TYPES[os.path.splitext(name)[1]], f"{name}: {kind}"
        assert len(asset.content) > 1_000, f"{name}: only {len(asset.content)} bytes"


def test_the_oauth2_redirect_page_is_served(server: PhoenixServer) -> None:
    response = server.get("/docs/oauth2-redirect")
    assert response.status_code == 200
    assert "oauth2" in response.text.lower()
    assert not re.search(r"""(src|href)=["'](https?:)?//""", response.text)


def test_the_dashboards_files_are_still_served_beside_the_docs_assets(
    server: PhoenixServer,
) -> None:
    assert server.get("/").status_code == 200
    index = server.get("/").text
    dashboard_files = re.findall(r'"/static/([^"/]+)"', index)
    assert dashboard_files, index[:500]
    for name in dashboard_files:
        assert server.get(f"/static/{name}").status_code == 200, name
    missing = server.get("/static/swagger/nothing-here.js")
    assert missing.status_code == 404


def test_swagger_ui_draws_the_api_with_no_way_out(server: PhoenixServer) -> None:
    if not os.path.exists(CHROMIUM):
        message = f"no Chromium at {CHROMIUM} (Debian package chromium)"
        if os.environ.get("PHOENIX_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import Route, expect, sync_playwright

    refused: list[str] = []

    def only_the_server(route: Route) -> None:
        if route.request.url.startswith(server.url):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"]
        )
        try:
            page = browser.new_page()
            page.route("**/*", only_the_server)
            page.goto(f"{server.url}/docs")
            # Drawn by Swagger UI from /openapi.json: the title, and an operation of the API.
            expect(page.locator(".swagger-ui .info .title")).to_contain_text(
                "Phoenix", timeout=15_000
            )
            expect(page.locator(".opblock-summary-path", has_text="/health").first).to_be_visible()
        finally:
            browser.close()
    assert refused == []
