"""The contract between server and page, and the one flag > env > default helper, as pure logic."""

from __future__ import annotations

import pytest

from server.contract import Limits, Scorer, ServedContract, neutralise_control_tokens
from server.options import EnvArgumentParser, OptionError


def test_a_published_contract_reads_back_as_published() -> None:
    sent = ServedContract(scorer=Scorer.QWEN3_YES_NO, limits=Limits(5, 100, 50), template_tokens=70)
    body = sent.to_json()
    assert body == {
        "scorer": "qwen3-yes-no",
        "limits": {"max_docs": 5, "max_doc_tokens": 100, "max_query_tokens": 50},
        "template_tokens": 70,
        "default_instruction": "Given a web search query, retrieve relevant passages that answer the query",
        "priority_scheduling": False,
    }
    read = ServedContract.from_json(body)
    assert read.published and read.takes_instruction
    assert (read.scorer, read.limits, read.template_tokens) == (Scorer.QWEN3_YES_NO, Limits(5, 100, 50), 70)


@pytest.mark.parametrize(
    "body", [{}, {"scorer": "magic", "limits": {}}, {"scorer": "plain", "limits": {"max_docs": "x"}}]
)
def test_anything_else_is_not_a_contract(body: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"^not a rerank contract"):
        ServedContract.from_json(body)


def test_a_server_that_publishes_nothing_is_a_plain_scorer() -> None:
    assumed = ServedContract()
    assert not assumed.published and not assumed.takes_instruction


def test_control_token_strings_get_a_zero_width_space_after_their_angle_bracket() -> None:
    zw = "\u200b"
    assert neutralise_control_tokens("a<|im_end|>b<think>c</tool_response>") == (
        f"a<{zw}|im_end|>b<{zw}think>c<{zw}/tool_response>"
    )
    assert neutralise_control_tokens("a < b, <div>, <thinking") == "a < b, <div>, <thinking"


def parser() -> EnvArgumentParser:
    p = EnvArgumentParser(prog="demo")
    p.add_env_argument("--port", env="DEMO_PORT", type=int, default=7860, help="port")
    p.add_env_argument("--share", env="DEMO_SHARE", action="store_true", default=False, help="share")
    p.add_env_argument("--auth", env="DEMO_AUTH", action="append", separator=",", help="login")
    p.add_env_argument("--key", env="DEMO_KEY", help="key")
    return p


def test_flag_wins_over_the_variable_which_wins_over_the_default() -> None:
    assert parser().parse_with_env([], {}).port == 7860
    assert parser().parse_with_env([], {"DEMO_PORT": "8001"}).port == 8001
    assert parser().parse_with_env(["--port", "9"], {"DEMO_PORT": "8001"}).port == 9
    env = {"DEMO_SHARE": "yes", "DEMO_AUTH": "a:b, c:d", "DEMO_KEY": "k"}
    args = parser().parse_with_env([], env)
    assert (args.share, args.auth, args.key) == (True, ["a:b", "c:d"], "k")
    args = parser().parse_with_env(["--auth", "x:y"], env)
    assert args.auth == ["x:y"]


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"DEMO_PORT": "eighty"}, "DEMO_PORT must be a number, got 'eighty'"),
        ({"DEMO_SHARE": "maybe"}, "DEMO_SHARE must be true or false, got 'maybe'"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(env: dict[str, str], message: str) -> None:
    with pytest.raises(OptionError, match=message):
        parser().parse_with_env([], env)


def test_help_names_each_variable_and_default_the_same_way() -> None:
    text = " ".join(parser().format_help().split())
    assert "port [DEMO_PORT; default 7860]" in text
    assert "key [DEMO_KEY]" in text


def test_a_contract_without_priority_scheduling_reads_as_first_come_first_served() -> None:
    body = ServedContract(priority_scheduling=True).to_json()
    assert ServedContract.from_json(body).priority_scheduling is True
    del body["priority_scheduling"]  # a server of an earlier release
    assert ServedContract.from_json(body).priority_scheduling is False


def test_the_instruction_sent_is_the_analysts_else_the_default_and_none_to_a_plain_scorer() -> None:
    qwen3 = ServedContract(scorer=Scorer.QWEN3_YES_NO)
    assert qwen3.instruction_for("  Find the city  ") == "Find the city"
    assert qwen3.instruction_for("   ") == "Given a web search query, retrieve relevant passages that answer the query"
    assert ServedContract(scorer=Scorer.PLAIN).instruction_for("Find the city") is None
