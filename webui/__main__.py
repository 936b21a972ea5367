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
from webui.settings import SettingsError, parse_command_line


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings, check_server = parse_command_line(argv, os.environ)
    except SettingsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if check_server:
        from webui.check import check_reranker

        try:
            print(asyncio.run(check_reranker(settings)))
        except RerankError as error:
            # The operator's console: the page never shows the address, this line does.
            print(f"error: {settings.server_url}: {error}", file=sys.stderr)
            return 1
        return 0
    # Imported here so that a bad flag is reported without waiting for Gradio to import.
    from webui.app import create_demo

    demo = create_demo(settings)
    # `docker stop` and systemd send SIGTERM: leave through `finally` so the page closes cleanly.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(0))
    try:
        demo.launch()
    except OSError as error:
        print(f"error: cannot serve on {settings.host}:{settings.port}: {error}", file=sys.stderr)
        return 1
    finally:
        demo.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
