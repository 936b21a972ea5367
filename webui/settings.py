"""The page's settings: one frozen dataclass, filled from flags, then env vars, then defaults.

    python -m webui --server-url http://127.0.0.1:8000 --concurrency 4 --queue-size 32

Every flag names its env var in ``--help``; the README lists them all.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


class SettingsError(ValueError):
    """A bad flag or env var value, reported as one line before anything starts."""


@dataclass(frozen=True)
class Settings:
    server_url: str = "http://127.0.0.1:8000"
    """Where `python -m server serve` listens; the page talks to it only over HTTP."""

    host: str = "127.0.0.1"
    """Loopback by default: the page holds private documents, so exposing it is a choice."""

    port: int = 7860
    """Gradio's customary port, so bookmarks and docs agree."""

    share: bool = False
    """A public gradio.live link is opt-in; it publishes the page to the internet."""

    auth: tuple[tuple[str, str], ...] = ()
    """Login pairs (user, password); required with --share unless --share-without-auth."""

    share_without_auth: bool = False
    """An explicit, visible escape hatch for public pages without login (demos only)."""

    concurrency: int = 4
    """Rerank jobs that may call the server at once; also the HTTP pool size."""

    queue_size: int = 32
    """Jobs that may wait beyond those running; more get a clear 'busy, try again'."""

    max_docs: int = 1000
    """Documents per job; bounds one analyst's share of the server and the page's memory."""

    max_doc_bytes: int = 100_000
    """One document's size (UTF-8 bytes); larger ones are refused, not silently cut."""

    max_upload_bytes: int = 20 * 1024 * 1024
    """An upload's size, checked before it is read whole; also caps the paste box."""

    timeout: float = 120.0
    """Seconds for any one HTTP call to the server; 1,000 long documents on a CPU take a while."""

    api_key: str | None = None
    """Sent as a Bearer token when the server was started with --api-key."""

    profile_label: str = ""
    """The server's profile name, shown on the page and used to recognise Qwen3 models."""

    instruction: str = field(default=DEFAULT_INSTRUCTION)
    """The model card's default task instruction, prefilled and editable on the page."""

    rerank_path: str = "/v1/rerank"
    """vLLM's rerank route; /v2/rerank (the same handler) behind vllm-router, which answers
    /v1/rerank itself in SGLang's format."""

    metrics_urls: tuple[str, ...] = ()
    """Servers whose /metrics the engine panel adds up (behind a fleet router, whose own
    /metrics is one server's); empty: the server URL's."""

    def __post_init__(self) -> None:
        checks = (
            (self.concurrency >= 1, "--concurrency must be at least 1"),
            (self.queue_size >= 1, "--queue-size must be at least 1"),
            (self.max_docs >= 1, "--max-docs must be at least 1"),
            (self.max_doc_bytes >= 1, "--max-doc-bytes must be at least 1"),
            (self.max_upload_bytes >= 1, "--max-upload-bytes must be at least 1"),
            (self.timeout > 0, "--timeout must be more than 0 seconds"),
            (1 <= self.port <= 65535, "--port must be between 1 and 65535"),
            (self.server_url.startswith(("http://", "https://")), "--server-url must start with http:// or https://"),
            (self.rerank_path.startswith("/"), "--rerank-path must start with /"),
            (
                all(url.startswith(("http://", "https://")) for url in self.metrics_urls),
                "--metrics-urls must each start with http:// or https://",
            ),
            (
                not self.share or bool(self.auth) or self.share_without_auth,
                (
                    "--share publishes the page: give --auth user:password (or RERANK_AUTH), "
                    "or --share-without-auth to publish it without login"
                ),
            ),
        )
        for ok, message in checks:
            if not ok:
                raise SettingsError(message)


def parse_auth_pair(text: str) -> tuple[str, str]:
    """`user:password` -> (user, password); the password may itself contain ':'."""
    user, sep, password = text.partition(":")
    if not sep or not user.strip() or not password:
        raise SettingsError(f"auth must look like user:password, got {text.split(':')[0]!r}:...")
    return user.strip(), password


def _env_bool(value: str, name: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off", ""):
        return False
    raise SettingsError(f"{name} must be true or false, got {value!r}")


def _env_number(value: str, name: str, kind: type[int | float]) -> int | float:
    try:
        return kind(value)
    except ValueError:
        raise SettingsError(f"{name} must be a number, got {value!r}") from None


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m webui",
        description="The analyst's reranking page. Flags win over env vars, which win over defaults.",
    )
    add = parser.add_argument
    add("--server-url", help="rerank server base URL [env RERANK_SERVER_URL; default http://127.0.0.1:8000]")
    add("--host", help="interface to bind [env RERANK_UI_HOST; default 127.0.0.1]")
    add("--port", type=int, help="port to bind [env RERANK_UI_PORT; default 7860]")
    add(
        "--share",
        action="store_true",
        default=None,
        help="create a public gradio.live link (needs --auth) [env RERANK_SHARE]",
    )
    add(
        "--auth",
        action="append",
        metavar="USER:PASSWORD",
        help="login pair, repeatable [env RERANK_AUTH, comma-separated]",
    )
    add("--share-without-auth", action="store_true", help="allow --share without any login (not recommended)")
    add("--concurrency", type=int, help="rerank jobs running at once [env RERANK_CONCURRENCY; default 4]")
    add("--queue-size", type=int, help="jobs allowed to wait [env RERANK_QUEUE_SIZE; default 32]")
    add("--max-docs", type=int, help="documents per job [env RERANK_MAX_DOCS; default 1000]")
    add("--max-doc-bytes", type=int, help="bytes per document [default 100000]")
    add("--max-upload-bytes", type=int, help="bytes per upload or paste [default 20 MiB]")
    add("--timeout", type=float, help="seconds per server call [env RERANK_TIMEOUT; default 120]")
    add("--api-key", help="server API key, sent as a Bearer token [env RERANK_API_KEY]")
    add("--profile-label", help="server profile shown on the page [env RERANK_PROFILE]")
    add("--rerank-path", help="the server's rerank route [env RERANK_RERANK_PATH; default /v1/rerank]")
    add(
        "--metrics-urls",
        help="servers whose engines the panel adds up, comma-separated [env RERANK_METRICS_URLS; default: the server]",
    )
    add("--check-server", action="store_true", help="check that the server reranks sensibly (warns if not), exit")
    return parser


def settings_from_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    """Flag > env > default. `env` is passed in (not read here) so tests never touch os.environ."""
    args = build_parser().parse_args(argv)
    values: dict[str, object] = {}

    def pick(attr: str, flag_value: object, env_name: str | None, kind: type[int | float] | None = None) -> None:
        if flag_value is not None:
            values[attr] = flag_value
        elif env_name is not None and env.get(env_name, "").strip():
            raw = env[env_name].strip()
            values[attr] = _env_number(raw, env_name, kind) if kind else raw

    pick("server_url", args.server_url, "RERANK_SERVER_URL")
    pick("host", args.host, "RERANK_UI_HOST")
    pick("port", args.port, "RERANK_UI_PORT", int)
    pick("concurrency", args.concurrency, "RERANK_CONCURRENCY", int)
    pick("queue_size", args.queue_size, "RERANK_QUEUE_SIZE", int)
    pick("max_docs", args.max_docs, "RERANK_MAX_DOCS", int)
    pick("max_doc_bytes", args.max_doc_bytes, None)
    pick("max_upload_bytes", args.max_upload_bytes, None)
    pick("timeout", args.timeout, "RERANK_TIMEOUT", float)
    pick("api_key", args.api_key, "RERANK_API_KEY")
    pick("profile_label", args.profile_label, "RERANK_PROFILE")
    pick("rerank_path", args.rerank_path, "RERANK_RERANK_PATH")
    pick("metrics_urls", args.metrics_urls, "RERANK_METRICS_URLS")
    if isinstance(values.get("metrics_urls"), str):
        urls = str(values["metrics_urls"]).split(",")
        values["metrics_urls"] = tuple(url.strip().rstrip("/") for url in urls if url.strip())

    if args.share is not None:
        values["share"] = True
    elif "RERANK_SHARE" in env:
        values["share"] = _env_bool(env["RERANK_SHARE"], "RERANK_SHARE")

    if args.auth:
        values["auth"] = tuple(parse_auth_pair(pair) for pair in args.auth)
    elif env.get("RERANK_AUTH", "").strip():
        values["auth"] = tuple(parse_auth_pair(pair) for pair in env["RERANK_AUTH"].split(",") if pair.strip())

    values["share_without_auth"] = bool(args.share_without_auth)
    if isinstance(values.get("server_url"), str):
        values["server_url"] = str(values["server_url"]).rstrip("/")
    return Settings(**values)  # type: ignore[arg-type]
