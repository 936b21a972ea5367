"""`python -m server {serve,plan,wait,profiles,launch,fleet}`: start vLLM right for a reranker.

Every option of `serve` and `plan` also reads an environment variable (named in its
help); a flag wins over the variable, the variable over the default.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from server import supervisor
from server.bundled import BundledModelError
from server.command import LOOPBACK_HOSTS, ServeOptions, build_command, memory_flags, plan_for
from server.fleet import FleetError, FleetOptions, check_servers, parse_servers, run_fleet
from server.hardware import detect_gpus
from server.health import ServerNotReady, wait_healthy
from server.plan import GIB, Limits, PlanError
from server.process import REPO_ROOT, StartupError, check_port_free, describe_exit, run_server
from server.profiles import PROFILES, UnknownProfileError, get_profile

T = TypeVar("T")


def _pick(flag: T | None, env: str, default: T, convert: Callable[[str], T]) -> T:
    """flag > environment variable > default."""
    if flag is not None:
        return flag
    raw = os.environ.get(env)
    if raw is None or raw == "":
        return default
    try:
        return convert(raw)
    except ValueError:
        raise SystemExit(f"error: {env}={raw!r} is not valid") from None


def _add_profile_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--profile",
        choices=list(PROFILES),
        help="deployment profile [RERANK_PROFILE; default: qwen3-4b with an NVIDIA GPU, else cpu]",
    )
    p.add_argument("--model", help="model id or local folder, instead of the profile's [RERANK_MODEL]")
    p.add_argument("--max-docs", type=int, help=f"documents per request [RERANK_MAX_DOCS; default {Limits.max_docs}]")
    p.add_argument(
        "--max-doc-tokens",
        type=int,
        help=f"tokens per document or passage [RERANK_MAX_DOC_TOKENS; default {Limits.max_doc_tokens}]",
    )
    p.add_argument(
        "--max-query-tokens",
        type=int,
        help=f"tokens of query plus instruction [RERANK_MAX_QUERY_TOKENS; default {Limits.max_query_tokens}]",
    )
    p.add_argument(
        "--gpu-mem", type=float, metavar="GIB", help="memory of one GPU in GiB [RERANK_GPU_MEM; default: detected]"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m server", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run vLLM for a profile (Ctrl-C stops it and its engine processes)")
    _add_profile_options(serve)
    serve.add_argument("--host", help="address to listen on [RERANK_HOST; default 127.0.0.1]")
    serve.add_argument("--port", type=int, help="port [RERANK_PORT; default 8000]")
    serve.add_argument(
        "--memory-plan",
        choices=("on", "off"),
        help="off: pass none of the plan's flags (vLLM defaults) [RERANK_MEMORY_PLAN; default on]",
    )
    serve.add_argument("--extra-args", help="more vLLM arguments, appended last [RERANK_VLLM_ARGS]")
    serve.add_argument("--api-key", help="require this bearer key on every route but /health [RERANK_API_KEY]")
    serve.add_argument("--log-file", type=Path, help="vLLM's log [RERANK_LOG_FILE; default logs/vllm-PORT.log]")
    serve.add_argument("--dry-run", action="store_true", help="print the command and exit")

    plan = sub.add_parser("plan", help="print the memory budget of a profile and the flags it leads to")
    _add_profile_options(plan)

    wait = sub.add_parser("wait", help="wait until a server answers /health")
    wait.add_argument("url")
    wait.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    wait.add_argument("--log-file", type=Path, help="server log, for the failure message")
    wait.add_argument("--pid", type=int, help="server process: fail at once if it dies")

    sub.add_parser("profiles", help="list the profiles")

    launch = sub.add_parser("launch", help="start vLLM and the page and supervise both (what ./launch.sh runs)")
    _add_profile_options(launch)
    supervisor.add_arguments(launch)

    fleet = sub.add_parser(
        "fleet", help="run vllm-router in front of servers that already run (README: Scaling out)"
    )
    fleet.add_argument("--servers", metavar="URL,URL", help="the running servers, comma-separated [RERANK_FLEET]")
    fleet.add_argument("--host", help="the router's address [RERANK_ROUTER_HOST; default 127.0.0.1]")
    fleet.add_argument("--port", type=int, help="the router's port [RERANK_ROUTER_PORT; default 30000]")
    fleet.add_argument("--api-key", help="the servers' key; the router requires it too [RERANK_API_KEY]")
    fleet.add_argument("--log-file", type=Path, help="the router's log [default logs/router-PORT.log]")
    fleet.add_argument(
        "--check", action="store_true", help="only check the servers; print how many rerank and exit"
    )
    return parser


def _options(args: argparse.Namespace) -> tuple[str, ServeOptions]:
    gpus = detect_gpus()
    profile = _pick(args.profile, "RERANK_PROFILE", "qwen3-4b" if gpus else "cpu", str)
    get_profile(profile)
    defaults = Limits()
    limits = Limits(
        max_docs=_pick(args.max_docs, "RERANK_MAX_DOCS", defaults.max_docs, int),
        max_doc_tokens=_pick(args.max_doc_tokens, "RERANK_MAX_DOC_TOKENS", defaults.max_doc_tokens, int),
        max_query_tokens=_pick(args.max_query_tokens, "RERANK_MAX_QUERY_TOKENS", defaults.max_query_tokens, int),
    )
    detected = gpus[0].memory_bytes / GIB if gpus else None
    serve_only = {"host": None, "port": None, "memory_plan": None, "extra_args": None, "api_key": None}
    given = {k: getattr(args, k, v) for k, v in serve_only.items()}
    options = ServeOptions(
        model=_pick(args.model, "RERANK_MODEL", None, str),
        limits=limits,
        gpu_memory_gib=_pick(args.gpu_mem, "RERANK_GPU_MEM", detected, float),
        num_gpus=max(1, len(gpus)),
        host=_pick(given["host"], "RERANK_HOST", "127.0.0.1", str),
        port=_pick(given["port"], "RERANK_PORT", 8000, int),
        memory_plan=_pick(given["memory_plan"], "RERANK_MEMORY_PLAN", "on", str) == "on",
        extra_args=tuple(shlex.split(_pick(given["extra_args"], "RERANK_VLLM_ARGS", "", str))),
        api_key=_pick(given["api_key"], "RERANK_API_KEY", None, str),
    )
    return profile, options


def cmd_plan(args: argparse.Namespace) -> int:
    name, options = _options(args)
    profile = get_profile(name)
    plan = plan_for(profile, options)
    print(f"profile {profile.name}: {profile.description}")
    print(
        f"limits: {options.limits.max_docs} docs/request, {options.limits.max_doc_tokens} tokens/doc, "
        f"{options.limits.max_query_tokens} tokens of query+instruction"
    )
    for line in plan.lines():
        print(f"  {line}")
    print("flags: " + " ".join(memory_flags(plan)))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    name, options = _options(args)
    profile = get_profile(name)
    if options.host not in LOOPBACK_HOSTS and not options.api_key:
        raise StartupError(
            f"refusing to listen on {options.host} without --api-key: vLLM's scoring routes "
            "would answer anyone who can reach the port"
        )
    command = build_command(profile, options)
    if args.dry_run:
        env = " ".join(f"{k}={shlex.quote('***' if 'KEY' in k else v)}" for k, v in command.env.items())
        print((env + " " if env else "") + shlex.join(command.argv))
        return 0
    log_path = _pick(args.log_file, "RERANK_LOG_FILE", REPO_ROOT / "logs" / f"vllm-{options.port}.log", Path)
    check_port_free(options.host, options.port)
    print(
        f"server: profile {profile.name}, model {options.model or profile.model}, "
        f"http://{options.host}:{options.port}, log {log_path}",
        file=sys.stderr,
    )
    code = run_server(command, log_path)
    if code not in (0, -2, -15, 130, 143):
        print(f"error: vLLM exited with code {code}: {describe_exit(code, log_path)}", file=sys.stderr)
        return 1
    return 0


def cmd_wait(args: argparse.Namespace) -> int:
    try:
        wait_healthy(args.url, args.timeout, pid=args.pid, log_path=args.log_file)
    except ServerNotReady as exc:
        if exc.log_tail:
            print(exc.log_tail, file=sys.stderr)
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


def cmd_profiles(args: argparse.Namespace) -> int:
    for profile in PROFILES.values():
        print(f"{profile.name:<16}{profile.description}")
    return 0


def cmd_launch(args: argparse.Namespace) -> int:
    name, options = _options(args)
    return supervisor.launch(args, name, options)


def cmd_fleet(args: argparse.Namespace) -> int:
    options = FleetOptions(
        servers=parse_servers(_pick(args.servers, "RERANK_FLEET", "", str)),
        host=_pick(args.host, "RERANK_ROUTER_HOST", "127.0.0.1", str),
        port=_pick(args.port, "RERANK_ROUTER_PORT", FleetOptions.port, int),
        api_key=_pick(args.api_key, "RERANK_API_KEY", None, str),
        log_file=args.log_file,
    )
    if args.check:
        checks = check_servers(options.servers, options.api_key, options.check_timeout_s)
        for check in checks:
            print(f"fleet: {check.url}: {'ok' if check.reranks else 'not answering'}: {check.message}", file=sys.stderr)
        print(sum(check.reranks for check in checks))
        return 0
    return run_fleet(options)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handlers = {
        "serve": cmd_serve, "plan": cmd_plan, "wait": cmd_wait, "profiles": cmd_profiles, "launch": cmd_launch,
        "fleet": cmd_fleet,
    }  # fmt: skip
    try:
        return handlers[args.command](args)
    except (StartupError, PlanError, UnknownProfileError, BundledModelError, FleetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
