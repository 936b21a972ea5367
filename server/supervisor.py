"""`python -m server launch`: start vLLM and the page, watch them, stop them: one owner.

launch.sh parses its options, installs what is missing, then execs this. Here, and only
here, are the signals handled: SIGINT, SIGTERM and SIGHUP get our handler even when the
parent started us with them ignored (nohup, `setsid cmd &`, CI runners), so one Ctrl-C
stops everything within STOP_GRACE_S plus a moment. Both children run in sessions of their
own and die with us (server/process.py), so a SIGKILL of this process leaves nothing behind;
the one-launcher lock is an flock on an open file, which the kernel drops with the process.

vLLM is restarted after a crash, with doubling pauses, never after a stop we asked for.
The console gets a few lines of our own; vLLM's and the page's logs go to the log folder.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from server.command import ServeOptions, build_command, plan_for
from server.failures import UNKNOWN_CAUSE, diagnose
from server.fleet import FleetError, check_servers, page_concurrency, parse_servers, router_answers
from server.health import is_healthy
from server.options import EnvArgumentParser
from server.plan import GIB
from server.process import REPO_ROOT, ChildProcess, StartupError, check_port_free, child_env, stop_children
from server.profiles import Profile, get_profile
from server.progress import StartupProgress

STOP_GRACE_S = 6.0
"""SIGTERM to SIGKILL: vLLM on a CPU stops in 2-4 s; the whole stop must fit in 10 s."""
CAUSE_LINES = 8
"""Log lines shown under a failure: enough for a traceback's last frames and its error."""


@dataclass(frozen=True)
class LaunchConfig:
    """What the supervisor needs beyond the server's own options (flag > env > default)."""

    server_url: str | None = None
    """A vLLM server that already runs: none is started, it is only checked and used."""
    fleet: tuple[str, ...] = ()
    """Servers that already run elsewhere: vllm-router is started in front of them instead
    of vLLM, and watched and restarted as vLLM would be (server/fleet.py)."""
    router_port: int = 30000
    """The fleet router's port, on loopback [RERANK_ROUTER_PORT]."""
    verbose: bool = False
    """Stream vLLM's and the page's logs to the console too, as before this supervisor."""
    startup_timeout: float = 900.0
    """Seconds to wait for vLLM's first /health: a first Qwen3 start downloads 8 GB."""
    log_dir: Path = REPO_ROOT / "logs"
    """vLLM's log, the page's log, the lock and the launcher's whereabouts."""
    page_args: tuple[str, ...] = ()
    """Passed to `python -m webui` as they are (--port, --auth, --share, ...)."""
    backoff_max: float = 60.0
    """The longest pause before restarting a crashed vLLM."""


def add_arguments(parser: EnvArgumentParser) -> None:
    """The launch subcommand's own options; the profile options come from server/cli.py."""
    add = parser.add_env_argument
    add("--server-port", dest="port", env="RERANK_PORT", type=int, default=8000, help="vLLM's port")
    add("--server-url", env="RERANK_SERVER_URL", help="use this running vLLM server; none is started")
    add("--fleet", env="RERANK_FLEET", default="", help="running servers, comma-separated: a router in front of them")
    add(
        "--router-port",
        env="RERANK_ROUTER_PORT",
        type=int,
        default=LaunchConfig.router_port,
        help="the fleet router's port, on loopback",
    )
    add("--extra-args", env="RERANK_VLLM_ARGS", default="", help="more vLLM arguments, appended last")
    add("--api-key", env="RERANK_API_KEY", help="key between page and server")
    add("--verbose", env="RERANK_VERBOSE", action="store_true", default=False, help="stream vLLM's and the page's logs")
    add(
        "--log-dir",
        env="RERANK_LOG_DIR",
        type=Path,
        default=LaunchConfig.log_dir,
        shown_default="logs",
        help="where logs go",
    )
    add(
        "--startup-timeout",
        env="RERANK_STARTUP_TIMEOUT",
        type=float,
        default=LaunchConfig.startup_timeout,
        help="seconds to wait for vLLM's first /health",
    )
    parser.add_argument("page_args", nargs=argparse.REMAINDER, help="after --: passed to python -m webui")


def config_from_args(args: argparse.Namespace) -> LaunchConfig:
    page_args = list(args.page_args)
    if page_args[:1] == ["--"]:
        page_args = page_args[1:]
    try:
        servers = parse_servers(args.fleet) if args.fleet else ()
    except FleetError as error:
        raise StartupError(f"--fleet: {error}") from None
    server_url = args.server_url or None
    if servers and server_url:
        raise StartupError("--fleet starts a router of its own: leave out --server-url (RERANK_SERVER_URL)")
    return LaunchConfig(
        server_url=server_url,
        fleet=servers,
        router_port=args.router_port,
        verbose=args.verbose,
        startup_timeout=args.startup_timeout,
        log_dir=args.log_dir,
        page_args=tuple(page_args),
    )


class Console:
    """Our own lines, prefixed; a console that went away (closed terminal, closed pipe)
    must not stop the product."""

    def __init__(self, stream: IO[str] = sys.stderr) -> None:
        self.stream = stream

    def say(self, text: str) -> None:
        with contextlib.suppress(OSError, ValueError):
            print(f"launch: {text}", file=self.stream, flush=True)


class StopRequested(Exception):
    """A signal asked us to stop; unwinds the startup waits."""


class Supervisor:
    def __init__(self, profile: Profile, options: ServeOptions, config: LaunchConfig, reason: str) -> None:
        self.profile = profile
        self.options = options
        self.config = config
        self.reason = reason
        self.console = Console()
        self.stop_signal: int | None = None
        self.wake = threading.Event()
        self.progress = StartupProgress()
        self.page_ready: str | None = None
        self.vllm: ChildProcess | None = None
        self.page: ChildProcess | None = None
        self.server_url = config.server_url or f"http://127.0.0.1:{options.port}"
        self.vllm_log = config.log_dir / f"vllm-{options.port}.log"
        self.what = "vLLM"
        """What the watched server child is: vLLM, or a fleet's router."""
        self.fleet_servers_healthy = 0
        if config.fleet:
            self.server_url = f"http://127.0.0.1:{config.router_port}"
            self.vllm_log = config.log_dir / f"fleet-{config.router_port}.log"
            self.what = "the router"
        self.page_log = config.log_dir / "page.log"

    # --- signals ---------------------------------------------------------------------------

    def install_handlers(self) -> None:
        """Our handler whatever the disposition at entry: a nohup or `setsid cmd &` parent
        leaves SIGINT ignored, and Python, unlike bash, may still catch it."""
        for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, self._on_signal)

    def _on_signal(self, signum: int, frame: object) -> None:
        if self.stop_signal is not None:
            # A second signal: do not wait out the grace period.
            for child in (self.vllm, self.page):
                if child is not None:
                    child.signal_group(signal.SIGKILL)
            return
        self.stop_signal = signum
        self.wake.set()

    def _pause(self, seconds: float) -> None:
        """Sleep that a stop request (or the page's ready line) cuts short."""
        self.wake.wait(seconds)
        self.wake.clear()
        if self.stop_signal is not None:
            raise StopRequested

    # --- the run ---------------------------------------------------------------------------

    def run(self) -> int:
        self.install_handlers()
        lock = self._take_lock()
        if lock is None:
            return 1
        try:
            return self._run()
        except StopRequested:
            return self._stop(0)
        except StartupError as error:
            self.console.say(str(error))
            return self._stop(1)
        finally:
            with contextlib.suppress(OSError):
                (self.config.log_dir / "launch.info").unlink()
            lock.close()

    def _run(self) -> int:
        if self.config.fleet:
            self._start_fleet()
        elif self.config.server_url is None:
            self.console.say(self.reason)
            plan = plan_for(self.profile, self.options)
            where = "of GPU memory per GPU" if self.profile.device == "cuda" else "of RAM"
            self.console.say(
                f"memory plan: {plan.total_bytes / GIB:.2f} GiB {where} "
                f"(.venv/bin/python -m server plan --profile {self.profile.name} itemises it)"
            )
            check_port_free(self.options.host, self.options.port, "--server-port")
            self._start_vllm()
            self.console.say(f"starting vLLM on {self.server_url}; its log: {self._shown(self.vllm_log)}")
        else:
            self.console.say(f"using the vLLM server at {self.server_url} (none started here)")
        self._start_page()
        if self.config.fleet:
            self._wait_router()
        elif self.vllm is not None:
            self._wait_first_health()
        self._check_scores()
        self._wait_page()
        self._write_info()
        return self._watch()

    def _take_lock(self) -> IO[str] | None:
        """One launcher per checkout: a second would fight over the ports and the logs."""
        self.config.log_dir.mkdir(parents=True, exist_ok=True)
        lock = (self.config.log_dir / "launch.lock").open("a")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            lock.close()
            info = self.config.log_dir / "launch.info"
            where = info.read_text().strip() if info.is_file() else "another launcher holds logs/launch.lock"
            self.console.say(f"already running: {where}; stop it with Ctrl-C there")
            return None
        (self.config.log_dir / "launch.info").write_text(f"pid {os.getpid()}, starting\n")
        return lock

    def _write_info(self) -> None:
        (self.config.log_dir / "launch.info").write_text(
            f"pid {os.getpid()}, page {self.page_ready}, server {self.server_url}\n"
        )

    # --- vLLM ------------------------------------------------------------------------------

    def _start_vllm(self) -> None:
        command = build_command(self.profile, self.options)
        self.progress.compiles = "--enforce-eager" not in command.argv
        self.progress.restart()
        self.vllm = ChildProcess(
            command.argv,
            child_env(command.env),
            self.vllm_log,
            echo=sys.stderr if self.config.verbose else None,
            on_line=self.progress.feed,
        )
        self.vllm.start()

    # --- a fleet's router (instead of vLLM) -------------------------------------------------

    def _start_fleet(self) -> None:
        """Check the servers as the page would, then run `python -m server fleet` as our child."""
        try:
            checks = check_servers(self.config.fleet, self.options.api_key, timeout=60.0)
        except FleetError as error:
            raise StartupError(f"the fleet cannot serve: {error}") from None
        for check in checks:
            state = "" if check.reranks else "not answering yet: "
            self.console.say(f"fleet: {state}{check.message}")
        self.fleet_servers_healthy = sum(check.reranks for check in checks)
        check_port_free("127.0.0.1", self.config.router_port, "RERANK_ROUTER_PORT")
        self._start_router()
        self.console.say(f"starting vllm-router on {self.server_url}; its log: {self._shown(self.vllm_log)}")

    def _start_router(self) -> None:
        argv = [
            sys.executable, "-m", "server", "fleet", "--servers", ",".join(self.config.fleet),
            "--port", str(self.config.router_port),
            "--log-file", str(self.config.log_dir / f"router-{self.config.router_port}.log"),
        ]  # fmt: skip
        env = {"RERANK_API_KEY": self.options.api_key} if self.options.api_key else {}
        echo = sys.stderr if self.config.verbose else None
        self.vllm = ChildProcess(argv, child_env(env), self.vllm_log, echo=echo)
        self.vllm.start()

    def _wait_router(self) -> None:
        assert self.vllm is not None
        deadline = time.monotonic() + 120
        while not router_answers(self.server_url, self.options.api_key):
            if self.vllm.poll() is not None:
                self._fail("the fleet's router exited during startup", self.vllm)
            if time.monotonic() > deadline:
                self._fail("the fleet's router did not answer in 120 s", self.vllm)
            self._pause(0.5)
        self.console.say("vllm-router ready")

    def _server_up(self) -> bool:
        if self.config.fleet:
            return router_answers(self.server_url, self.options.api_key)
        return is_healthy(self.server_url, timeout=1.0)

    # --- vLLM ------------------------------------------------------------------------------

    def _wait_first_health(self) -> None:
        assert self.vllm is not None
        while not is_healthy(self.server_url, timeout=1.0):
            news = self.progress.news()
            if news:
                self.console.say(f"vLLM {news}")
            code = self.vllm.poll()
            if code is not None:
                self._fail(f"vLLM exited during startup (code {code})", self.vllm)
            if self.progress.elapsed() > self.config.startup_timeout:
                self._fail(f"vLLM not healthy after {self.config.startup_timeout:.0f} s", self.vllm)
            self._pause(0.5)
        self.console.say(f"vLLM ready ({self.progress.elapsed():.0f} s)")

    def _fail(self, what: str, child: ChildProcess) -> None:
        """One line of diagnosis, the log's path, and the lines that show the cause."""
        child.finish()
        log_text = child.last_run_log()
        lines = [line for line in log_text.splitlines() if line.strip()][-CAUSE_LINES:]
        for line in lines:
            with contextlib.suppress(OSError, ValueError):
                print(f"  {line[:200]}", file=sys.stderr)
        raise StartupError(f"{what}: {diagnose(log_text)}; log: {self._shown(child.log_path)}")

    # --- the page --------------------------------------------------------------------------

    def _start_page(self) -> None:
        """Started beside vLLM's load: its own import costs seconds that overlap vLLM's."""
        started_vllm = self.config.server_url is None and not self.config.fleet
        env = {"RERANK_PROFILE": self.profile.name} if started_vllm else {}
        if self.options.api_key:
            env["RERANK_API_KEY"] = self.options.api_key
        if self.config.fleet and not os.environ.get("RERANK_CONCURRENCY"):
            env["RERANK_CONCURRENCY"] = str(page_concurrency(self.fleet_servers_healthy))
            self.console.say(f"fleet: the page runs {env['RERANK_CONCURRENCY']} reranks at once")
        if self.profile.name == "multi-gpu" and not os.environ.get("RERANK_CONCURRENCY"):
            # One replica per GPU serves that many more requests at once: let the page send them.
            env["RERANK_CONCURRENCY"] = str(4 * self.options.num_gpus)
        argv = [sys.executable, "-m", "webui", "--server-url", self.server_url, *self._fleet_page_args()]
        argv += self.config.page_args
        self.page = ChildProcess(
            argv,
            child_env(env),
            self.page_log,
            echo=sys.stderr if self.config.verbose else None,
            on_line=self._page_line,
        )
        self.page.start()

    def _fleet_page_args(self) -> list[str]:
        """Behind vllm-router the page reranks through /v2/rerank and reads each server's engine."""
        if not self.config.fleet:
            return []
        return ["--rerank-path", "/v2/rerank", "--metrics-urls", ",".join(self.config.fleet)]

    def _page_line(self, line: str) -> None:
        if line.startswith("page: "):
            self.page_ready = line[len("page: ") :].strip()
            self.wake.set()

    def _wait_page(self) -> None:
        assert self.page is not None
        deadline = time.monotonic() + 300
        while self.page_ready is None:
            code = self.page.poll()
            if code is not None:
                self._fail(f"the page exited (code {code})", self.page)
            if time.monotonic() > deadline:
                self._fail("the page did not start in 300 s", self.page)
            self._pause(0.5)
        self.console.say(f"ready: {self.page_ready}; Ctrl-C stops it (logs in {self._shown(self.config.log_dir)}/)")

    # --- the score check -------------------------------------------------------------------

    def _check_scores(self) -> None:
        """A few pairs where one document plainly answers: a model served without its
        template, or the wrong model, fails here instead of serving plausible garbage."""
        argv = [sys.executable, "-m", "webui", "--server-url", self.server_url, "--check-server"]
        argv += self._fleet_page_args()
        env = child_env({"RERANK_API_KEY": self.options.api_key} if self.options.api_key else {})
        if self.config.server_url is None and not self.config.fleet:
            env["RERANK_PROFILE"] = self.profile.name
        with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
            check = subprocess.Popen(argv, env=env, cwd=REPO_ROOT, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
            try:
                while check.poll() is None:  # polled, so that a stop need not wait for it
                    self._pause(0.2)
            finally:
                if check.poll() is None:
                    check.kill()
                    check.wait()
            out.seek(0)
            err.seek(0)
            described, warned = out.read().strip(), err.read().strip()
        # stdout describes the server: news only for one we did not start. stderr holds the
        # warning or the error, always shown.
        for text in (described if self.config.server_url is not None else "", warned):
            if text:
                with contextlib.suppress(OSError, ValueError):
                    print(text, file=sys.stderr, flush=True)
        if check.returncode != 0:
            raise StartupError(f"{self.server_url} is not a usable reranker server")

    # --- after start -----------------------------------------------------------------------

    def _watch(self) -> int:
        """Until a stop: a crashed vLLM is restarted after a pause that doubles each time
        (a model that crashes at once must not spin the CPU); a healthy one resets it."""
        assert self.page is not None
        backoff = 2.0
        down_since: float | None = None
        while True:
            self._pause(1.0)
            code = self.page.poll()
            if code is not None:
                self.console.say(f"the page exited (code {code}); stopping; its log: {self._shown(self.page_log)}")
                return self._stop(1)
            if self.vllm is None:
                continue
            code = self.vllm.poll()
            if code is not None:
                self.vllm.finish()
                self.console.say(
                    f"{self.what} exited ({exit_cause(code, self.vllm.last_run_log())}); "
                    f"restarting in {backoff:.0f} s; its log: {self._shown(self.vllm_log)}"
                )
                self._pause(backoff)
                backoff = min(backoff * 2, self.config.backoff_max)
                if self.config.fleet:
                    self._start_router()
                else:
                    self._start_vllm()
                down_since = time.monotonic()
            elif down_since is not None and self._server_up():
                self.console.say(f"{self.what} is back ({time.monotonic() - down_since:.0f} s)")
                down_since = None
                backoff = 2.0

    def _stop(self, code: int) -> int:
        """Both children at once: SIGTERM to each group, SIGKILL after the grace period."""
        children = [c for c in (self.page, self.vllm) if c is not None]
        if self.stop_signal is not None and any(c.poll() is None for c in children):
            self.console.say("stopping")  # after a failure its line is the last thing said
        stop_children(children, STOP_GRACE_S)
        return code

    def _shown(self, path: Path) -> str:
        """Paths inside the checkout as the user would type them from there."""
        with contextlib.suppress(ValueError):
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        return str(path)


def exit_cause(code: int, log_text: str) -> str:
    """'killed by SIGKILL' or 'code 1', and the cause from the log when it is a known one."""
    how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"code {code}"
    cause = diagnose(log_text)
    return how if cause.startswith(UNKNOWN_CAUSE) else f"{how}: {cause}"


def profile_reason(profile: Profile, asked: bool, model: str | None) -> str:
    """The profile and why it was chosen, in one line."""
    served = f", model {model}" if model else ""
    if asked:
        return f"profile {profile.name}{served}: {profile.description}"
    if profile.device == "cpu":
        return (
            f"profile {profile.name}{served}: no NVIDIA GPU found, so the bundled all-MiniLM-L6-v2 on the CPU; "
            "--profile picks another (./launch.sh --help)"
        )
    return f"profile {profile.name}{served}: an NVIDIA GPU is present; {profile.description}"


def launch(args: argparse.Namespace, profile_name: str, options: ServeOptions) -> int:
    profile = get_profile(profile_name)
    config = config_from_args(args)
    asked = bool(args.profile or os.environ.get("RERANK_PROFILE"))
    reason = profile_reason(profile, asked, options.model)
    return Supervisor(profile, options, config, reason).run()
