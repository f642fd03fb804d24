"""``patchwright setup``: register the GitHub App from ``app.yml`` with GitHub's manifest flow.

1. A small web server on 127.0.0.1 serves a page whose form posts the manifest (``app.yml``
   with the webhook URL and this server's callback URL filled in) to GitHub's
   ``/settings/apps/new`` (or ``/organizations/<org>/settings/apps/new``), with a random
   ``state`` that is new for every run.
2. GitHub asks the user to confirm, creates the App and redirects the browser to
   ``/callback?code=…&state=…``. A ``state`` that does not match answers 400 and writes nothing.
3. The code is exchanged (``POST /app-manifests/{code}/conversions``, no authentication) for the
   App's id, slug, private key and webhook secret.
4. The private key goes to ``<slug>.private-key.pem`` beside the settings file, and the settings
   file (``.env``) gets ``PATCHWRIGHT_APP_ID``, ``PATCHWRIGHT_APP_SLUG``,
   ``PATCHWRIGHT_PRIVATE_KEY_PATH`` (absolute), ``PATCHWRIGHT_WEBHOOK_SECRET`` and
   ``PATCHWRIGHT_GITHUB_URL``; its other lines are kept. Both files are written atomically with
   mode 0600. What was written is printed with the secrets hidden; then the server stops.

GitHub's web address is derived from ``PATCHWRIGHT_GITHUB_URL``: ``https://github.com`` for
``https://api.github.com``, ``https://HOST`` for GitHub Enterprise Server's
``https://HOST/api/v3``, ``https://SUB.ghe.com`` for ``https://api.SUB.ghe.com``, and the URL
itself for anything else (the local emulator serves the form at its base URL).
"""

from __future__ import annotations

import argparse
import asyncio
import hmac
import html
import io
import json
import os
import re
import secrets
import sys
import tempfile
import webbrowser
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import aiohttp
import gidgethub
import gidgethub.abc
import yaml
from aiohttp import web
from dotenv.parser import parse_stream

from bot.config import ConfigError, load_settings
from bot.github.api import segment
from bot.github.client import GitHubClient

#: Keys GitHub reads from an App manifest.
MANIFEST_KEYS = frozenset(
    {
        "name",
        "url",
        "description",
        "hook_attributes",
        "redirect_url",
        "callback_urls",
        "setup_url",
        "public",
        "default_events",
        "default_permissions",
        "request_oauth_on_install",
        "setup_on_update",
    }
)
CALLBACK_PATH = "/callback"
DEFAULT_PORT = 3000
#: Settings whose values are never printed.
SECRET_SETTINGS = frozenset({"PATCHWRIGHT_WEBHOOK_SECRET", "PATCHWRIGHT_PRIVATE_KEY"})
#: Settings emptied when present: an old key there would win over the new key file.
SUPERSEDED_SETTINGS = ("PATCHWRIGHT_PRIVATE_KEY", "PRIVATE_KEY")
_BARE_VALUE_RE = re.compile(r"[A-Za-z0-9_./:@+,=-]*")

PrintLine = Callable[[str], None]
OpenBrowser = Callable[[str], object]


class SetupError(Exception):
    """Setup cannot go on; the message says why and what to do."""


# -- pure parts --------------------------------------------------------------------------------


def parse_app_yml(text: str) -> dict[str, Any]:
    """The manifest fields of a Probot-style ``app.yml``; unknown keys are errors (typos)."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SetupError(f"app.yml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise SetupError("app.yml must be a mapping of manifest fields (name, url, default_events…)")
    unknown = sorted(str(k) for k in data if k not in MANIFEST_KEYS)
    if unknown:
        raise SetupError(
            f"app.yml has keys a GitHub App manifest does not know: {', '.join(unknown)} "
            f"(known: {', '.join(sorted(MANIFEST_KEYS))})"
        )
    if not isinstance(data.get("url"), str) or not data["url"]:
        raise SetupError("app.yml needs `url`: the App's homepage (GitHub requires it)")
    hook = data.get("hook_attributes", {})
    if hook is not None and not isinstance(hook, dict):
        raise SetupError("app.yml: `hook_attributes` must be a mapping (url, active)")
    return data


def check_http_url(url: str, *, what: str) -> str:
    """``url`` when it is an absolute http(s) URL, else :class:`SetupError`."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SetupError(f"{what} must be an absolute http(s) URL, got {url!r}")
    return url


def build_manifest(app_yml: Mapping[str, Any], *, webhook_url: str, redirect_url: str) -> dict[str, Any]:
    """The manifest to post: ``app.yml`` with the webhook URL and the callback URL filled in."""
    manifest = dict(app_yml)
    hook = dict(app_yml.get("hook_attributes") or {})
    hook["url"] = check_http_url(webhook_url, what="--webhook-url")
    hook.setdefault("active", True)
    manifest["hook_attributes"] = hook
    manifest["redirect_url"] = redirect_url
    return manifest


def web_url_for(api_url: str) -> str:
    """GitHub's web address for the REST API base URL ``api_url`` (see the module docstring)."""
    parts = urlsplit(api_url.rstrip("/"))
    host = (parts.hostname or "").lower()
    if host == "api.github.com":
        return "https://github.com"
    if host.startswith("api.") and host.endswith(".ghe.com"):
        return f"{parts.scheme}://{parts.netloc[len('api.'):]}"
    if parts.path.rstrip("/").endswith("/api/v3"):
        return f"{parts.scheme}://{parts.netloc}{parts.path.rstrip('/')[: -len('/api/v3')]}"
    return api_url.rstrip("/")


def registration_url(api_url: str, *, state: str, org: str | None = None) -> str:
    """Where the manifest form posts: the user's or the organization's "new App" page."""
    base = web_url_for(api_url)
    path = f"/organizations/{segment(org)}/settings/apps/new" if org else "/settings/apps/new"
    return f"{base}{path}?{urlencode({'state': state})}"


def registration_page(manifest: Mapping[str, Any], action_url: str, *, env_file: Path) -> str:
    """HTML whose form posts ``manifest`` to ``action_url`` as soon as it loads."""
    name = html.escape(str(manifest.get("name") or "GitHub App"))
    target = html.escape(urlsplit(action_url).netloc)
    return f"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Register {name}</title></head>
<body>
<h1>Register the GitHub App “{name}”</h1>
<p>This page sends the App's manifest (from <code>app.yml</code>) to {target}. There you confirm
the App's name and create it; {target} then sends you back here, and <code>patchwright setup</code>
writes the App's credentials to <code>{html.escape(str(env_file))}</code>.</p>
<form id="register" method="post" action="{html.escape(action_url)}">
<input type="hidden" name="manifest" value="{html.escape(json.dumps(manifest))}">
<button type="submit">Create the App on {target}</button>
</form>
<script>document.getElementById("register").submit();</script>
</body>
</html>
"""


def result_page(title: str, message: str, *, link: str | None = None) -> str:
    """A plain HTML page for the callback's answers (``message`` is text, escaped here)."""
    anchor = f'<p><a href="{html.escape(link)}">{html.escape(link)}</a></p>' if link else ""
    return (
        f'<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}'
        f"</title></head>\n<body><h1>{html.escape(title)}</h1><p>{html.escape(message)}</p>"
        f"{anchor}</body></html>\n"
    )


def key_file_name(slug: str) -> str:
    """``<slug>.private-key.pem``, the name GitHub gives a downloaded key."""
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", slug) or ".." in slug:
        raise SetupError(f"GitHub answered an unexpected App slug {slug!r}")
    return f"{slug}.private-key.pem"


def env_values(app: Mapping[str, Any], *, key_path: Path, github_url: str) -> dict[str, str]:
    """The settings to write for the App GitHub created (``app``: the conversion's answer)."""
    return {
        "PATCHWRIGHT_APP_ID": str(app["id"]),
        "PATCHWRIGHT_APP_SLUG": str(app["slug"]),
        "PATCHWRIGHT_PRIVATE_KEY_PATH": str(key_path),
        "PATCHWRIGHT_WEBHOOK_SECRET": str(app["webhook_secret"]),
        "PATCHWRIGHT_GITHUB_URL": github_url,
    }


def format_env_value(value: str) -> str:
    """``value`` as a .env value that python-dotenv (pydantic-settings' reader) reads back."""
    if "${" in value:
        # python-dotenv expands ${NAME} even inside quotes; there is no escape for it.
        raise SetupError(f"cannot write a value containing '${{' to a .env file: {value!r}")
    if "\n" in value or "\r" in value:
        raise SetupError("cannot write a value with a line break to a .env file")
    if _BARE_VALUE_RE.fullmatch(value):
        return value
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def merge_env(
    existing: str,
    values: Mapping[str, str],
    *,
    clear: Iterable[str] = (),
    header: str = "# Written by `patchwright setup`",
) -> str:
    """``existing`` .env text with ``values`` set and the ``clear`` keys emptied where present.

    A key's first line (multi-line quoted values included) is replaced in place, later
    duplicates are dropped, and keys not yet present are appended under ``header``. Every other
    line — comments, unrelated settings, unparsable lines — is kept as it was.
    """
    wanted = {**{k: "" for k in clear}, **values}
    seen: set[str] = set()
    out: list[str] = []
    for binding in parse_stream(io.StringIO(existing)):
        key = binding.key
        if binding.error or key is None or key not in wanted:
            out.append(binding.original.string)
            continue
        if key not in seen:
            ending = "\n" if binding.original.string.endswith(("\n", "\r")) else ""
            out.append(f"{key}={format_env_value(wanted[key])}{ending}")
            seen.add(key)
    missing = [k for k in values if k not in seen]
    text = "".join(out)
    if missing:
        if text and not text.endswith("\n"):
            text += "\n"
        if text.strip():
            text += "\n"
        text += header + "\n"
        text += "".join(f"{k}={format_env_value(values[k])}\n" for k in missing)
    return text


def describe_env(values: Mapping[str, str]) -> list[str]:
    """``NAME=value`` lines for the console, secrets replaced by a note."""
    return [
        f"{k}=(secret, not shown)" if k in SECRET_SETTINGS and v else f"{k}={v}"
        for k, v in values.items()
    ]


def env_overrides(environ: Mapping[str, str], written: Mapping[str, str]) -> list[str]:
    """Written settings that the process environment overrides with another value."""
    return [k for k, v in written.items() if k in environ and environ[k] != v]


# -- files ---------------------------------------------------------------------------------------


def write_private_file(path: Path, text: str) -> None:
    """Replace ``path`` atomically with ``text``, readable by its owner only (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)  # created 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class SetupResult:
    """The App that was registered, and where its credentials went."""

    app_id: int
    slug: str
    name: str
    html_url: str
    env_file: Path
    key_file: Path
    written: tuple[str, ...]


def save_credentials(app: Mapping[str, Any], *, env_file: Path, github_url: str) -> tuple[SetupResult, dict[str, str]]:
    """Write the key file and merge the settings into ``env_file``; answer what was written."""
    for field in ("id", "slug", "pem", "webhook_secret"):
        if not app.get(field):
            raise SetupError(f"GitHub's answer lacks the App's {field}; nothing was written")
    env_file = env_file.absolute()
    key_file = env_file.parent / key_file_name(str(app["slug"]))
    values = env_values(app, key_path=key_file, github_url=github_url)
    existing = env_file.read_text(encoding="utf-8") if env_file.exists() else ""
    header = f"# GitHub App {app['slug']} (id {app['id']}), written by `patchwright setup`"
    text = merge_env(existing, values, clear=SUPERSEDED_SETTINGS, header=header)
    write_private_file(key_file, str(app["pem"]))
    write_private_file(env_file, text)
    result = SetupResult(
        app_id=int(app["id"]),
        slug=str(app["slug"]),
        name=str(app.get("name") or app["slug"]),
        html_url=str(app.get("html_url") or ""),
        env_file=env_file,
        key_file=key_file,
        written=tuple(values),
    )
    return result, values


async def exchange_code(gh: gidgethub.abc.GitHubAPI, code: str) -> dict[str, Any]:
    """``POST /app-manifests/{code}/conversions`` (no authentication): the new App's credentials."""
    answer = await gh.post(f"/app-manifests/{segment(code)}/conversions", data=b"")
    if not isinstance(answer, dict):
        raise SetupError("GitHub answered the code exchange with something other than an App")
    return answer


# -- the web part ---------------------------------------------------------------------------------


class SetupServer:
    """The registration page and the callback, on ``host:port`` (0: any free port).

    :meth:`start` answers the page's URL; :meth:`wait` returns once the credentials are
    written. ``state`` is random unless given (tests).
    """

    def __init__(
        self,
        app_yml: Mapping[str, Any],
        *,
        webhook_url: str,
        github_url: str,
        env_file: Path,
        session: aiohttp.ClientSession,
        org: str | None = None,
        host: str = "127.0.0.1",
        port: int = DEFAULT_PORT,
        state: str | None = None,
        print_line: PrintLine = print,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.app_yml = dict(app_yml)
        self.webhook_url = check_http_url(webhook_url, what="--webhook-url")
        self.github_url = github_url.rstrip("/")
        self.env_file = env_file
        self.org = org
        self.host = host
        self.port = port
        self.state = state or secrets.token_urlsafe(24)
        self.print_line = print_line
        self.environ: Mapping[str, str] = environ or {}
        self._gh = GitHubClient(session, base_url=self.github_url)
        self._runner: web.AppRunner | None = None
        self._lock = asyncio.Lock()
        self._done: asyncio.Future[SetupResult] = asyncio.get_running_loop().create_future()
        self.url = ""

    @property
    def callback_url(self) -> str:
        return f"{self.url}{CALLBACK_PATH}"

    def manifest(self) -> dict[str, Any]:
        return build_manifest(self.app_yml, webhook_url=self.webhook_url, redirect_url=self.callback_url)

    async def start(self) -> str:
        app = web.Application()
        app.router.add_get("/", self._page)
        app.router.add_get(CALLBACK_PATH, self._callback)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await self._runner.cleanup()
            self._runner = None
            raise SetupError(
                f"cannot listen on {self.host}:{self.port} ({exc.strerror}); choose another --port"
            ) from None
        bound = self._runner.addresses[0][1]
        self.url = f"http://{self.host}:{bound}"
        return self.url + "/"

    async def wait(self) -> SetupResult:
        return await asyncio.shield(self._done)

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def _page(self, request: web.Request) -> web.Response:
        action = registration_url(self.github_url, state=self.state, org=self.org)
        page = registration_page(self.manifest(), action, env_file=self.env_file.absolute())
        return web.Response(text=page, content_type="text/html", headers={"Cache-Control": "no-store"})

    async def _callback(self, request: web.Request) -> web.Response:
        state = request.query.get("state", "")
        if not hmac.compare_digest(state.encode(), self.state.encode()):
            return _html(400, "State mismatch", "This answer does not belong to this run of "
                         "`patchwright setup`; nothing was written. Start again from the "
                         "registration page.", link=self.url + "/")
        code = request.query.get("code", "")
        if not code:
            return _html(400, "No code", "GitHub's answer carries no code; nothing was written.",
                         link=self.url + "/")
        async with self._lock:
            if self._done.done():
                return _html(410, "Already done", "The App is registered and its settings written; "
                             "this setup run is over.")
            try:
                app = await exchange_code(self._gh, code)
                result, values = save_credentials(app, env_file=self.env_file, github_url=self.github_url)
            except gidgethub.HTTPException as exc:
                hint = " Codes work once and expire after an hour." if exc.status_code == 404 else ""
                return _html(502, "GitHub refused the code",
                             f"{int(exc.status_code)}: {exc}.{hint} Nothing was written; start "
                             "again from the registration page.", link=self.url + "/")
            except (TimeoutError, aiohttp.ClientError) as exc:
                return _html(502, "GitHub is unreachable",
                             f"Exchanging the code failed ({type(exc).__name__}); nothing was written.",
                             link=self.url + "/")
            except (SetupError, OSError) as exc:
                return _html(500, "Setup failed", str(exc))
            self._report(result, values)
            self._done.set_result(result)
        install = f"{result.html_url}/installations/new" if result.html_url else ""
        return _html(200, f"Registered {result.name}",
                     f"The App's settings are in {result.env_file}. Next, install the App on "
                     "your repositories, then run `patchwright serve`.", link=install or None)

    def _report(self, result: SetupResult, values: Mapping[str, str]) -> None:
        where = f": {result.html_url}" if result.html_url else ""
        self.print_line(f"Registered the GitHub App {result.slug} (id {result.app_id}){where}")
        self.print_line(f"Wrote {result.env_file} (mode 600):")
        for line in describe_env(values):
            self.print_line(f"  {line}")
        self.print_line(f"Wrote the private key to {result.key_file} (mode 600)")
        for name in env_overrides(self.environ, values):
            self.print_line(f"Warning: {name} is set in the environment and overrides the file.")
        if result.html_url:
            self.print_line(f"Next: install the App: {result.html_url}/installations/new")
        self.print_line("Then run: patchwright serve")


def _html(status: int, title: str, message: str, *, link: str | None = None) -> web.Response:
    return web.Response(
        status=status,
        text=result_page(title, message, link=link),
        content_type="text/html",
        headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"},
    )


async def run_setup(
    app_yml_text: str,
    *,
    webhook_url: str,
    github_url: str,
    env_file: Path,
    org: str | None = None,
    port: int = DEFAULT_PORT,
    open_browser: OpenBrowser | None = None,
    print_line: PrintLine = print,
    environ: Mapping[str, str] | None = None,
) -> SetupResult:
    """Serve the registration page until the App is registered and ``env_file`` written."""
    app_yml = parse_app_yml(app_yml_text)
    async with aiohttp.ClientSession() as session:
        server = SetupServer(
            app_yml,
            webhook_url=webhook_url,
            github_url=github_url,
            env_file=env_file,
            session=session,
            org=org,
            port=port,
            print_line=print_line,
            environ=environ,
        )
        page = await server.start()
        try:
            print_line(f"Open {page} to register the GitHub App on {web_url_for(github_url)}")
            print_line(f"(GitHub will send its webhooks to {webhook_url}.)")
            if open_browser is not None:
                await asyncio.to_thread(open_browser, page)
            return await server.wait()
        finally:
            await server.stop()


def run_from_args(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """``patchwright setup --webhook-url URL [--org NAME] [--port N] [--env-file F] [--no-browser]``."""
    env_file: Path = args.setup_env_file or args.env_file
    try:
        settings = load_settings(environ, env_file=env_file)
        app_yml_text = args.app_yml.read_text(encoding="utf-8")
    except ConfigError as exc:
        print(f"patchwright setup: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"patchwright setup: cannot read {args.app_yml}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        asyncio.run(
            run_setup(
                app_yml_text,
                webhook_url=args.webhook_url,
                github_url=settings.github_url,
                env_file=env_file,
                org=args.org,
                port=args.port,
                open_browser=None if args.no_browser else webbrowser.open,
                environ=environ,
            )
        )
    except SetupError as exc:
        print(f"patchwright setup: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0
