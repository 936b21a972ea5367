"""`python -m webui`: parse settings (flag > env > default), build the page, serve it.

python -m webui --server-url http://127.0.0.1:8000 --auth analyst:secret --share
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from collections.abc import Sequence

from webui.client import RerankError
from webui.settings import Settings, SettingsError, build_parser, settings_from_args


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = settings_from_args(argv, os.environ)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if build_parser().parse_args(argv).check_server:
        return check_server(settings)
    # Imported here so that a bad flag is reported without waiting for Gradio to import.
    from webui.app import create_demo

    demo = create_demo(settings)
    # `docker stop` and systemd send SIGTERM: leave through `finally` so the page closes cleanly.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        # quiet: Gradio's banner and its "set share=True in launch()" hint are wrong for this
        # product (--share); one line of our own says where the page is, and launch.sh
        # waits for exactly that line.
        _, local_url, share_url = demo.launch(quiet=True, prevent_thread_lock=True)
        print(ready_line(local_url, share_url, settings.share), flush=True)
        demo.block_thread()
    except OSError as error:
        print(f"error: cannot serve on {settings.host}:{settings.port}: {error}", file=sys.stderr)
        return 1
    finally:
        demo.close()
    return 0


def check_server(settings: Settings) -> int:
    """One line that says what the server serves, and one warning line if it ranks badly."""
    from webui.check import check_reranker, score_sanity

    async def both() -> tuple[str, str | None]:
        described = await check_reranker(settings)
        model_id, result = await score_sanity(settings)
        return described, result.warning(model_id)

    try:
        described, warning = asyncio.run(both())
    except RerankError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(described, flush=True)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    return 0


def ready_line(local_url: str, share_url: str | None, share_asked: bool) -> str:
    """`page: URL`, with the public link when there is one (or why there is none)."""
    line = f"page: {local_url.rstrip('/')}"
    if share_url:
        line += f" and {share_url.rstrip('/')} (public)"
    elif share_asked:
        line += " (no public link: Gradio could not open its tunnel; is the internet reachable?)"
    return line


if __name__ == "__main__":
    sys.exit(main())
