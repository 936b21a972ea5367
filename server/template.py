"""The Qwen3 reranker prompt template that vLLM renders (passed with --chat-template).

Every client, curl included, then gets correctly templated pairs. What the template promises
its clients (the default instruction, its fixed token overhead, the neutralising of control-token
strings) is defined once in server/contract.py; tests/test_server_template.py renders the
template and proves that it keeps each promise.
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE_PATH = Path(__file__).parent / "templates" / "qwen3_reranker.jinja"
