"""`bench.load_page`'s verdict (the issue's conditions, each PASS or FAIL) and its Markdown report."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def verdict(record: dict[str, Any], growth_limit_mib: float) -> list[str]:
    """The issue's conditions, each as a line that says whether it held. Counts are judged over
    every round; memory over the last, when the processes have served as much as they will."""
    rounds = record["rounds"]
    refused = sum(r["counts"]["refused"] for r in rounds)
    failed = sum(r["counts"]["failed"] for r in rounds)
    messages = {m for r in rounds for m in r["refusal_messages"]}
    checks = [
        (refused > 0, f"the page was driven past its capacity ({refused:,} refused)"),
        (failed == 0, f"nothing failed ({failed:,} failed)"),
        (not record["reference_drift"], "the server's reference answers were the same after the run"),
        (all("try again" in m.lower() for m in messages), "every refusal was the busy message"),
    ]
    last = rounds[-1]["memory"]
    which = f"round {len(rounds)}, " if len(rounds) > 1 else ""
    for role in ("page", "server"):
        growth = last[role]["growth_mib"]
        checks.append(
            (growth <= growth_limit_mib, f"{role} memory did not grow ({which}{growth:+.1f} MiB after warm-up)")
        )
    return [f"{'PASS' if ok else 'FAIL'}: {text}" for ok, text in checks]


def markdown(record: dict[str, Any], checks: Sequence[str]) -> str:
    config, machine_info, rounds = record["config"], record["machine"], record["rounds"]
    lines = [
        "# Load on the page: CPU profile",
        "",
        f"`python -m bench.load_page` on {machine_info['cpu']}, {machine_info['cores']} cores, "
        f"{machine_info['memory_gib']} GiB ({machine_info['os']}); "
        + ", ".join(f"{k} {v}" for k, v in machine_info["versions"].items())
        + ".",
        "",
        f"{config['users']} users, {len(rounds)} round(s) of {config['duration_s']:.0f} s against the same page "
        f"and server processes (page defaults: 4 running, 32 waiting); model `{record['model']}`; "
        f"{config['documents']} documents of {config['words']} words per request, {config['workloads']} distinct "
        f"inputs; think time up to {config['think_s']} s, retry {config['busy_retry_s']} s after busy; open-tab "
        f"timer ticks {'on' if config['viewer_ticks'] else 'off'}.",
        "",
        "| round | accepted (complete, equal to the server's answer) | refused (busy) | failed | accepted/s "
        "| wait p50 / p95 (s) | end to end p50 / p95 (s) | ticks sent / failed | load avg before, after |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(rounds, start=1):
        counts = r["counts"]
        lines.append(
            f"| {number} | {counts['accepted']:,} | {counts['refused']:,} | {counts['failed']:,} | "
            f"{r['accepted_per_s']} | {r['wait_s']['p50']} / {r['wait_s']['p95']} | "
            f"{r['end_to_end_s']['p50']} / {r['end_to_end_s']['p95']} | "
            f"{r['viewer_ticks']['sent']:,} / {r['viewer_ticks']['failed']:,} | "
            f"{r['load_average_before_after'][0]}, {r['load_average_before_after'][1]} |"
        )
    lines += [
        "",
        "Wait is the time in the page's queue: end to end minus the ranking time the page reports.",
        "",
        "| resident memory (MiB) | early | late | growth | max | slope MiB/min |",
        "|---|---|---|---|---|---|",
    ]
    for number, r in enumerate(rounds, start=1):
        for role in ("page", "server"):
            m = r["memory"][role]
            lines.append(
                f"| round {number}, {role} | {m['early_mib']} | {m['late_mib']} | {m['growth_mib']:+} | "
                f"{m['max_mib']} | {m['slope_mib_per_min']:+} |"
            )
    lines += [
        "",
        f"Early and late: means of the first and last fifth of a round after its first {config['warmup_s']:.0f} s. "
        "Page: the `python -m webui` process; server: vLLM's API server and its engine processes.",
        "",
        *(f"- {check}" for check in checks),
    ]
    failures = {detail: n for r in rounds for detail, n in r["failures"].items()}
    if failures:
        lines += ["", "Failures:", *(f"- {n} x {detail}" for detail, n in failures.items())]
    return "\n".join(lines) + "\n"
