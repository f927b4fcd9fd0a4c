"""The API docs (Swagger UI at /api/docs/, ReDoc at /api/redoc/) work with no internet: every script, style sheet
and icon they reference is served by this service, and a browser with every other host blocked renders them."""

import os
import re
from html.parser import HTMLParser
from urllib.parse import urlparse

import pytest
from django.db import connections
from django.test import Client

DOCS_PAGES = ("/api/docs/", "/api/redoc/")


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls: list[str] = []
        self.inline_scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script":
            if attrs.get("src"):
                self.urls.append(attrs["src"])
            else:
                self.inline_scripts += 1
        elif tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])


def _assets(html: str) -> _Assets:
    parser = _Assets()
    parser.feed(html)
    return parser


@pytest.fixture
def static_client(settings):
    """A client whose WhiteNoise serves static files from the apps' folders, as `collectstatic` output would be."""
    settings.WHITENOISE_USE_FINDERS = True
    settings.WHITENOISE_AUTOREFRESH = True
    return Client(raise_request_exception=False)


@pytest.mark.django_db
@pytest.mark.parametrize("page", DOCS_PAGES)
def test_docs_pages_load_only_assets_this_service_serves(static_client, page):
    response = static_client.get(page)
    assert response.status_code == 200 and response["Content-Type"].startswith("text/html")
    html = response.content.decode()
    assets = _assets(html)
    assert assets.urls, html
    # No inline script: the start-up code is a same-origin file too, so the page policy needs no 'unsafe-inline'.
    assert assets.inline_scripts == 0, html
    assert not re.search(r"https?://", " ".join(assets.urls)), assets.urls
    for host in ("cdn.jsdelivr.net", "unpkg.com", "fonts.googleapis.com", "fonts.gstatic.com"):
        assert host not in html
    for url in assets.urls:
        assert urlparse(url).netloc == "", url
        fetched = static_client.get(url)
        assert fetched.status_code == 200, (url, fetched.status_code)
        body = b"".join(fetched.streaming_content) if fetched.streaming else fetched.content
        assert len(body) > 100, url
        if url.endswith(".js") or "script" in url:
            assert "javascript" in fetched["Content-Type"], (url, fetched["Content-Type"])


@pytest.mark.django_db
def test_swagger_ui_start_up_script_points_at_the_local_schema(static_client):
    script_url = next(u for u in _assets(static_client.get("/api/docs/").content.decode()).urls if "script" in u)
    script = static_client.get(script_url).content.decode()
    assert 'url: "/api/schema/"' in script and "SwaggerUIBundle(" in script
    assert "https://" not in script
    schema = static_client.get("/api/schema/?format=json")
    assert schema.status_code == 200 and schema.json()["info"]["title"] == "Speedproof API"


@pytest.mark.django_db
def test_unknown_api_paths_answer_the_json_error_shape_for_anyone():
    client = Client(raise_request_exception=False)
    for method in ("get", "post", "put", "patch", "delete"):
        for path in ("/api/v1/nope/", "/api/v1/organizations/1/nope/", "/api/v1/nope"):
            response = getattr(client, method)(path)
            assert response.status_code == 404, (method, path, response.status_code)
            assert response["Content-Type"].startswith("application/json")
            assert response.json() == {"error": {"code": "not_found", "message": "Not found.", "fields": {}}}


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture
def offline_page(monkeypatch, live_server):
    """A browser page that may reach the live server only: any request to another host is aborted and recorded."""
    if not os.path.exists(CHROMIUM):
        pytest.fail(f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium")
    from playwright.sync_api import sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    own = urlparse(live_server.url).netloc
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(20_000)
        page = context.new_page()
        page.blocked, page.errors = [], []

        def route(route):
            url = urlparse(route.request.url)
            if url.scheme in ("data", "blob") or url.netloc == own:
                route.continue_()
            else:
                page.blocked.append(route.request.url)
                route.abort()

        def console(message):
            if message.type == "error" and "Content Security Policy" in message.text:
                page.errors.append(message.text)

        context.route("**/*", route)
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", console)
        yield page
        context.close()
        browser.close()
        connections.close_all()


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_swagger_ui_and_redoc_render_the_operations_offline(live_server, offline_page):
    page = offline_page
    page.goto(f"{live_server.url}/api/docs/")
    page.wait_for_selector(".opblock-summary-path")
    paths = page.locator(".opblock-summary-path").all_inner_texts()
    assert any("/api/v1/organizations/{organization_pk}/invites/" in p.replace("\u200b", "") for p in paths), paths
    assert page.locator(".opblock").count() > 50

    page.goto(f"{live_server.url}/api/redoc/")
    page.wait_for_selector("[data-section-id^='tag/']")
    page.wait_for_function("document.body.innerText.includes('/api/v1/invites/accept/')")

    # Nothing tried to reach another host, and nothing failed, except ReDoc's side-menu credit: its bundle hardcodes
    # an <img> from cdn.redoc.ly, which the page policy refuses before any request is made (it then hides itself).
    assert page.blocked == [], page.blocked
    assert [e for e in page.errors if "https://cdn.redoc.ly/redoc/logo-mini.svg" not in e] == [], page.errors
