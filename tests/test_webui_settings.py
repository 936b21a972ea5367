"""Settings: flag > env > default, validation in one line, and the real `python -m webui` CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from webui.settings import Settings, SettingsError, parse_auth_pair, settings_from_args

REPO = Path(__file__).resolve().parents[1]


def test_defaults_match_the_issue() -> None:
    settings = settings_from_args([], {})
    assert settings == Settings()
    assert (settings.concurrency, settings.queue_size, settings.max_docs) == (4, 32, 1000)
    assert settings.host == "127.0.0.1" and settings.port == 7860
    assert settings.share is False and settings.auth == () and settings.api_key is None


def test_env_fills_what_flags_leave_out_and_flags_win() -> None:
    env = {
        "RERANK_SERVER_URL": "http://gpu-box:8000/",
        "RERANK_UI_HOST": "0.0.0.0",
        "RERANK_UI_PORT": "8080",
        "RERANK_CONCURRENCY": "2",
        "RERANK_QUEUE_SIZE": "5",
        "RERANK_MAX_DOCS": "50",
        "RERANK_TIMEOUT": "9.5",
        "RERANK_API_KEY": "env-key",
        "RERANK_PROFILE": "cpu",
        "RERANK_AUTH": "ann:pw1, bob:pw:with:colons",
        "RERANK_SHARE": "true",
    }
    from_env = settings_from_args([], env)
    assert from_env.server_url == "http://gpu-box:8000"
    assert (from_env.host, from_env.port, from_env.concurrency, from_env.queue_size) == ("0.0.0.0", 8080, 2, 5)
    assert (from_env.max_docs, from_env.timeout, from_env.api_key, from_env.profile_label) == (
        50,
        9.5,
        "env-key",
        "cpu",
    )
    assert from_env.auth == (("ann", "pw1"), ("bob", "pw:with:colons"))
    assert from_env.share is True

    flags = [
        "--server-url",
        "http://other:9000",
        "--port",
        "9999",
        "--concurrency",
        "7",
        "--auth",
        "cy:pw",
        "--api-key",
        "flag-key",
    ]
    from_flags = settings_from_args(flags, env)
    assert (from_flags.server_url, from_flags.port, from_flags.concurrency) == ("http://other:9000", 9999, 7)
    assert from_flags.auth == (("cy", "pw"),) and from_flags.api_key == "flag-key"
    assert from_flags.queue_size == 5  # not given as a flag: the env var still holds


def test_repeated_auth_flags_accumulate() -> None:
    settings = settings_from_args(["--auth", "a:1", "--auth", "b:2"], {})
    assert settings.auth == (("a", "1"), ("b", "2"))


def test_share_requires_login_unless_explicitly_waived() -> None:
    with pytest.raises(SettingsError, match="--share publishes the page: give --auth"):
        settings_from_args(["--share"], {})
    assert settings_from_args(["--share", "--share-without-auth"], {}).share is True
    assert settings_from_args(["--share", "--auth", "a:b"], {}).auth == (("a", "b"),)


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--concurrency", "0"], {}, "--concurrency must be at least 1"),
        (["--queue-size", "0"], {}, "--queue-size must be at least 1"),
        (["--timeout", "0"], {}, "--timeout must be more than 0"),
        (["--server-url", "gpu-box:8000"], {}, "must start with http://"),
        ([], {"RERANK_UI_PORT": "eighty"}, "RERANK_UI_PORT must be a number, got 'eighty'"),
        ([], {"RERANK_SHARE": "maybe"}, "RERANK_SHARE must be true or false"),
        ([], {"RERANK_AUTH": "nopassword"}, "auth must look like user:password"),
    ],
)
def test_bad_values_are_one_clear_line(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(SettingsError, match=message) as caught:
        settings_from_args(argv, env)
    assert "\n" not in str(caught.value)


def test_auth_error_never_echoes_the_password() -> None:
    with pytest.raises(SettingsError) as caught:
        parse_auth_pair("ann:")
    assert "ann" in str(caught.value)
    with pytest.raises(SettingsError) as caught:
        parse_auth_pair(":secret")
    assert "secret" not in str(caught.value)


def _run_cli(*args: str, env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("RERANK_")}
    env.update(env_extra or {})
    return subprocess.run(
        [sys.executable, "-m", "webui", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_cli_refuses_share_without_auth_in_one_line() -> None:
    result = _run_cli("--share")
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert result.stderr.startswith("error: --share publishes the page")
    assert "Traceback" not in result.stderr


def test_cli_help_names_every_env_var() -> None:
    result = _run_cli("--help")
    assert result.returncode == 0
    for name in (
        "RERANK_SERVER_URL",
        "RERANK_UI_HOST",
        "RERANK_UI_PORT",
        "RERANK_SHARE",
        "RERANK_AUTH",
        "RERANK_CONCURRENCY",
        "RERANK_QUEUE_SIZE",
        "RERANK_MAX_DOCS",
        "RERANK_TIMEOUT",
        "RERANK_API_KEY",
        "RERANK_PROFILE",
    ):
        assert name in result.stdout


def test_batch_size_and_prepared_cache_come_from_flag_env_or_default() -> None:
    assert (Settings().batch_tokens, Settings().prepared_cache_bytes) == (4096, 64 * 1024 * 1024)
    env = {"RERANK_BATCH_TOKENS": "2048", "RERANK_PREPARED_CACHE_BYTES": "1000"}
    from_env = settings_from_args([], env)
    assert (from_env.batch_tokens, from_env.prepared_cache_bytes) == (2048, 1000)
    assert settings_from_args(["--batch-tokens", "512"], env).batch_tokens == 512
    with pytest.raises(SettingsError, match="--batch-tokens must be at least 1"):
        settings_from_args(["--batch-tokens", "0"], {})
