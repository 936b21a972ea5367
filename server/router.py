"""The router process of a fleet: vllm-router (vLLM's Rust router) in front of the servers.

    RERANK_ROUTER_CONFIG='{"worker_urls": [...], "port": 30000, ...}' python -m server.router

`server/fleet.py` starts this as its child and builds the configuration; it is not meant to be
run by hand. It exists because vllm-router's command line lacks two things the fleet needs:
the client-key check (`api_key_validation_urls`, an argument of its Rust `Router` only) and a
key that stays out of `ps` (here it comes from RERANK_API_KEY, never from argv).
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

CONFIG_ENV = "RERANK_ROUTER_CONFIG"
KEY_ENV = "RERANK_API_KEY"


def main() -> int:
    # Imported here: only a fleet host installs vllm-router (server/requirements-fleet.txt).
    from vllm_router_rs import PolicyType, Router

    try:
        config: dict[str, Any] = json.loads(os.environ[CONFIG_ENV])
    except (KeyError, json.JSONDecodeError) as error:
        print(f"error: {CONFIG_ENV} must hold the router's JSON configuration ({error})", file=sys.stderr)
        return 2
    config["policy"] = getattr(PolicyType, config["policy"])
    key = os.environ.get(KEY_ENV) or None
    # The router sends this key on its own calls to the servers (/metrics, model info); the
    # page's requests travel with the page's own Authorization header.
    config["api_key"] = key
    Router(**config).start()  # blocks until SIGINT/SIGTERM
    return 0


if __name__ == "__main__":
    sys.exit(main())
