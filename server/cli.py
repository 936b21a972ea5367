"""`python -m server {serve,plan,wait,profiles,launch,fleet}`: start vLLM right for a reranker.

Every option of `serve` and `plan` also reads an environment variable (named in its
help); a flag wins over the variable, the variable over the default.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

from server import supervisor
from server.bundled import BundledModelError
from server.command import LOOPBACK_HOSTS, ServeOptions, build_command, memory_flags, plan_for
from server.contract import Limits
from server.fleet import FleetError, FleetOptions, check_servers, parse_servers, run_fleet
from server.hardware import detect_gpus
from server.health import ServerNotReady, wait_healthy
from server.options import EnvArgumentParser, OptionError
from server.plan import GIB, PlanError
from server.process import REPO_ROOT, StartupError, check_port_free, describe_exit, run_server
from server.profiles import PROFILES, UnknownProfileError, get_profile


def _add_profile_options(p: EnvArgumentParser) -> None:
    p.add_env_argument(
        "--profile",
        env="RERANK_PROFILE",
        choices=list(PROFILES),
        shown_default="qwen3-4b with an NVIDIA GPU, else cpu",
        help="deployment profile",
    )
    p.add_env_argument("--model", env="RERANK_MODEL", help="model id or local folder, instead of the profile's")
    defaults = Limits()
    p.add_env_argument(
        "--max-docs", env="RERANK_MAX_DOCS", type=int, default=defaults.max_docs, help="documents per request"
    )
    p.add_env_argument(
        "--max-doc-tokens",
        env="RERANK_MAX_DOC_TOKENS",
        type=int,
        default=defaults.max_doc_tokens,
        help="tokens per document or passage",
    )
    p.add_env_argument(
        "--max-query-tokens",
        env="RERANK_MAX_QUERY_TOKENS",
        type=int,
        default=defaults.max_query_tokens,
        help="tokens of query plus instruction",
    )
    p.add_env_argument(
        "--gpu-mem", env="RERANK_GPU_MEM", type=float, metavar="GIB", shown_default="detected",
        help="memory of one GPU in GiB",
    )  # fmt: skip


def build_parser() -> EnvArgumentParser:
    parser = EnvArgumentParser(prog="python -m server", description=__doc__.splitlines()[0] if __doc__ else None)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run vLLM for a profile (Ctrl-C stops it and its engine processes)")
    _add_profile_options(serve)
    serve.add_env_argument("--host", env="RERANK_HOST", default="127.0.0.1", help="address to listen on")
    serve.add_env_argument("--port", env="RERANK_PORT", type=int, default=8000, help="port")
    serve.add_env_argument(
        "--memory-plan",
        env="RERANK_MEMORY_PLAN",
        choices=("on", "off"),
        default="on",
        help="off: pass none of the plan's flags (vLLM defaults)",
    )
    serve.add_env_argument(
        "--extra-args", env="RERANK_VLLM_ARGS", default="", help="more vLLM arguments, appended last"
    )
    serve.add_env_argument("--api-key", env="RERANK_API_KEY", help="require this bearer key on every route but /health")
    serve.add_env_argument(
        "--log-file", env="RERANK_LOG_FILE", type=Path, shown_default="logs/vllm-PORT.log", help="vLLM's log"
    )
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

    fleet = sub.add_parser("fleet", help="run vllm-router in front of servers that already run (README: Scaling out)")
    fleet.add_env_argument(
        "--servers", env="RERANK_FLEET", default="", metavar="URL,URL", help="the running servers, comma-separated"
    )
    fleet.add_env_argument("--host", env="RERANK_ROUTER_HOST", default="127.0.0.1", help="the router's address")
    fleet.add_env_argument(
        "--port", env="RERANK_ROUTER_PORT", type=int, default=FleetOptions.port, help="the router's port"
    )
    fleet.add_env_argument(
        "--metrics-port",
        env="RERANK_ROUTER_METRICS_PORT",
        type=int,
        shown_default="--port + 1",
        help="the router's own Prometheus exporter, on loopback",
    )
    fleet.add_env_argument("--api-key", env="RERANK_API_KEY", help="the servers' key; the router requires it too")
    fleet.add_argument("--log-file", type=Path, help="the router's log [default logs/router-PORT.log]")
    fleet.add_argument("--check", action="store_true", help="only check the servers; print how many rerank and exit")
    return parser


SERVE_ONLY = ("host", "port", "memory_plan", "extra_args", "api_key")


def _options(args: argparse.Namespace) -> tuple[str, ServeOptions]:
    gpus = detect_gpus()
    profile = args.profile or ("qwen3-4b" if gpus else "cpu")
    get_profile(profile)
    limits = Limits(max_docs=args.max_docs, max_doc_tokens=args.max_doc_tokens, max_query_tokens=args.max_query_tokens)
    detected = gpus[0].memory_bytes / GIB if gpus else None
    options = ServeOptions(
        model=args.model,
        limits=limits,
        gpu_memory_gib=args.gpu_mem if args.gpu_mem is not None else detected,
        num_gpus=max(1, len(gpus)),
    )
    # serve and launch have these; plan has none of them.
    given = {name: value for name in SERVE_ONLY if (value := getattr(args, name, None)) is not None}
    if "memory_plan" in given:
        given["memory_plan"] = given["memory_plan"] == "on"
    if "extra_args" in given:
        given["extra_args"] = tuple(shlex.split(given["extra_args"]))
    options = dataclasses.replace(options, **given)
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
    log_path = args.log_file or REPO_ROOT / "logs" / f"vllm-{options.port}.log"
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
        servers=parse_servers(args.servers),
        host=args.host,
        port=args.port,
        api_key=args.api_key,
        router_metrics_port=args.metrics_port,
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
    handlers = {
        "serve": cmd_serve, "plan": cmd_plan, "wait": cmd_wait, "profiles": cmd_profiles, "launch": cmd_launch,
        "fleet": cmd_fleet,
    }  # fmt: skip
    try:
        args = build_parser().parse_with_env(argv, os.environ)
        return handlers[args.command](args)
    except (StartupError, PlanError, UnknownProfileError, BundledModelError, OptionError, FleetError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
