"""The page's settings: one frozen dataclass, filled from flags, then env vars, then defaults.

    python -m webui --server-url http://127.0.0.1:8000 --concurrency 4 --queue-size 32

Every flag names its env var in ``--help``; the README lists them all.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields

from server.contract import DEFAULT_INSTRUCTION, Limits
from server.options import EnvArgumentParser, OptionError


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

    max_docs: int = Limits().max_docs
    """Documents per job; bounds one analyst's share of the server and the page's memory."""

    max_doc_bytes: int = 100_000
    """One document's size (UTF-8 bytes); larger ones are refused, not silently cut."""

    max_upload_bytes: int = 20 * 1024 * 1024
    """An upload's size, checked before it is read whole; also caps the paste box."""

    timeout: float = 120.0
    """Seconds for any one HTTP call to the server; 1,000 long documents on a CPU take a while."""

    batch_tokens: int = 4096
    """Tokens per /v1/rerank call: half the CPU profile's 8192-token engine step (~4 s on 2
    cores), so a long job's calls finish far within --timeout and a newer job's passages fit
    in the same step; raise it on a GPU, where a call of this size takes milliseconds."""

    prepared_cache_bytes: int = 64 * 1024 * 1024
    """Documents (with their passage splits) kept between queries; the least recently used
    go first, and no text is kept beyond this bound."""

    api_key: str | None = None
    """Sent as a Bearer token when the server was started with --api-key."""

    profile_label: str = ""
    """The server's profile name, shown on the page (what the server scores with, the page
    learns from the server's published contract)."""

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
            (self.batch_tokens >= 1, "--batch-tokens must be at least 1"),
            (self.prepared_cache_bytes >= 0, "--prepared-cache-bytes must be 0 or more"),
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


def build_parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(
        prog="python -m webui",
        description="The analyst's reranking page. Flags win over env vars, which win over defaults.",
    )
    defaults = Settings()
    add = parser.add_env_argument
    add("--server-url", env="RERANK_SERVER_URL", default=defaults.server_url, help="rerank server base URL")
    add("--host", env="RERANK_UI_HOST", default=defaults.host, help="interface to bind")
    add("--port", env="RERANK_UI_PORT", type=int, default=defaults.port, help="port to bind")
    add(
        "--share",
        env="RERANK_SHARE",
        action="store_true",
        default=defaults.share,
        help="create a public gradio.live link (needs --auth)",
    )
    add(
        "--auth",
        env="RERANK_AUTH",
        action="append",
        metavar="USER:PASSWORD",
        separator=",",
        help="login pair, repeatable (the variable: comma-separated)",
    )
    add(
        "--share-without-auth",
        env="RERANK_SHARE_WITHOUT_AUTH",
        action="store_true",
        default=defaults.share_without_auth,
        help="allow --share without any login (not recommended)",
    )
    add(
        "--concurrency",
        env="RERANK_CONCURRENCY",
        type=int,
        default=defaults.concurrency,
        help="rerank jobs running at once",
    )
    add("--queue-size", env="RERANK_QUEUE_SIZE", type=int, default=defaults.queue_size, help="jobs allowed to wait")
    add("--max-docs", env="RERANK_MAX_DOCS", type=int, default=defaults.max_docs, help="documents per job")
    add(
        "--max-doc-bytes",
        env="RERANK_MAX_DOC_BYTES",
        type=int,
        default=defaults.max_doc_bytes,
        help="bytes per document",
    )
    add(
        "--max-upload-bytes",
        env="RERANK_MAX_UPLOAD_BYTES",
        type=int,
        default=defaults.max_upload_bytes,
        shown_default="20 MiB",
        help="bytes per upload or paste",
    )
    add("--timeout", env="RERANK_TIMEOUT", type=float, default=defaults.timeout, help="seconds per server call")
    add(
        "--batch-tokens",
        env="RERANK_BATCH_TOKENS",
        type=int,
        default=defaults.batch_tokens,
        help="tokens per server call; a long job is sent in calls of this size",
    )
    add(
        "--prepared-cache-bytes",
        env="RERANK_PREPARED_CACHE_BYTES",
        type=int,
        default=defaults.prepared_cache_bytes,
        shown_default="64 MiB",
        help="bytes of documents kept prepared between queries",
    )
    add("--api-key", env="RERANK_API_KEY", help="server API key, sent as a Bearer token")
    add("--profile-label", env="RERANK_PROFILE", default="", help="server profile shown on the page")
    add("--rerank-path", env="RERANK_RERANK_PATH", default=defaults.rerank_path, help="the server's rerank route")
    add(
        "--metrics-urls",
        env="RERANK_METRICS_URLS",
        separator=",",
        shown_default="the server",
        help="servers whose engines the panel adds up, comma-separated",
    )
    parser.add_argument(
        "--check-server", action="store_true", help="check that the server reranks sensibly (warns if not), exit"
    )
    return parser


def parse_command_line(argv: Sequence[str] | None, env: Mapping[str, str]) -> tuple[Settings, bool]:
    """(settings, whether --check-server was given); flag > env > default. `env` is passed in
    (not read here) so tests never touch os.environ."""
    try:
        args = build_parser().parse_with_env(argv, env)
    except OptionError as error:
        raise SettingsError(str(error)) from None
    values = {f.name: getattr(args, f.name) for f in fields(Settings) if hasattr(args, f.name)}
    values["auth"] = tuple(parse_auth_pair(pair) for pair in args.auth or ())
    urls = args.metrics_urls if isinstance(args.metrics_urls, list) else str(args.metrics_urls or "").split(",")
    values["metrics_urls"] = tuple(url.strip().rstrip("/") for url in urls if url.strip())
    values["server_url"] = str(args.server_url).rstrip("/")
    return Settings(**values), bool(args.check_server)


def settings_from_args(argv: Sequence[str] | None, env: Mapping[str, str]) -> Settings:
    return parse_command_line(argv, env)[0]
