"""The chaos run's table and, under it, the evidence for every failed invariant."""

from __future__ import annotations

from typing import Any

from bench.chaos.run import FaultReport

HEADER = ("fault", "2xx lost", "duplicates", "sockets complete", "stranded outbound", "5xx during fault", "recovery s")


def _failures(counts: dict[str, int]) -> str:
    return "+".join(f"{n}×{what}" for what, n in sorted(counts.items())) or "0"


def row(report: FaultReport) -> tuple[str, ...]:
    d = report.during
    return (
        report.title,
        str(len(report.lost)),
        str(len(report.duplicated)),
        f"{report.sockets_complete}/{len(report.sockets)}",
        str(len(report.stranded)),
        f"in {d.get('inbound_failed', 0)} · re {d.get('replies_failed', 0)} · ws {d.get('socket_failures', 0)}",
        (f"{report.recovery_s:.1f}" if report.recovery_s is not None else "not settled")
        + (" (crash)" if report.exits else "")
        + (" (worker restarted: Celery bug)" if report.known_exits else ""),
    )


def table(reports: list[FaultReport]) -> str:
    rows = [HEADER, *(row(r) for r in reports)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(HEADER))]
    lines = ["| " + " | ".join(cell.ljust(widths[i]) for i, cell in enumerate(r)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines)


LEGEND = (
    "5xx during fault: answers seen from the fault's start until the system settled that were not 2xx (5xx, or none "
    "at all: cut or timed out; in = inbound webhooks, re = agents' replies), and socket handshakes that failed (ws). "
    "Recovery: the fault's end until both Daphnes are ready, the newest webhook and reply succeed, a reply written "
    "since has reached the provider, every socket is connected and no outbound message is stuck; (crash): a server "
    "process exited on its own meanwhile and was restarted by the runner, as its supervisor would."
)


def details(report: FaultReport) -> str:
    out: list[str] = [
        f"## {report.title} ({report.name}): {'ok' if report.ok else 'FAILED'}",
        f"  fault: {report.note}",
    ]
    s, d = report.sent, report.during
    out.append(
        f"  load: {s.get('inbound', 0)} webhooks ({s.get('inbound_2xx', 0)} answered 2xx), {s.get('replies', 0)} "
        f"replies ({s.get('replies_201', 0)} answered 201)"
    )
    out.append(
        f"  during the fault: webhooks {_failures(d.get('inbound', {}))}; replies {_failures(d.get('replies', {}))}; "
        f"socket handshakes {_failures(d.get('socket_handshakes_failed', {}))}; sockets closed "
        f"{_failures(d.get('socket_closes', {}))}"
        + (
            f" (webhook and reply failures from {d['failures_between'][0]:+.1f} s to {d['failures_between'][1]:+.1f} s "
            "after the fault began)"
            if d.get("failures_between")
            else ""
        )
    )
    if report.recovery_s is not None and report.last_to_clear:
        out.append(f"  settled {report.recovery_s:.1f} s after the fault; the last to clear: {report.last_to_clear}")
    if report.recovery_s is None:
        out.append(f"  NOT SETTLED within the bound; still wrong: {report.not_settled}")
        out.extend(f"    {line}" for line in report.diagnosis)
    if report.lost:
        out.append(f"  LOST (answered 2xx, not there): {len(report.lost)}: {report.lost[:10]}")
    if report.duplicated:
        out.append(f"  DUPLICATED: {report.duplicated[:10]}")
    for sock in report.sockets:
        if not sock["complete"]:
            who = "supervisor" if sock["supervisor"] else "agent"
            out.append(
                f"  SOCKET INCOMPLETE: {who} user {sock['user_id']}: missing {sock['missing_count']} of "
                f"{sock['expected']} {sock['missing'][:10]}, extra {sock['extra'][:10]}, duplicates "
                f"{sock['duplicates']}{', ' + sock['resync_error'] if sock['resync_error'] else ''}"
            )
    twice = sum(sock["duplicates"] for sock in report.sockets)
    if twice:
        out.append(f"  socket events received twice (dropped by socket.js): {twice}")
    if report.stranded:
        out.append(f"  STRANDED outbound (queued/sending after recovery): {report.stranded[:10]}")
    if report.inbound_refused_not_stored:
        out.append(
            f"  webhooks refused and not stored: {report.inbound_refused_not_stored} (lost unless Twilio retries "
            "them; it retries a 5xx only with a connection override such as #rp=5xx)"
        )
    if report.inbound_refused_but_stored:
        out.append(f"  webhooks answered an error yet stored: {report.inbound_refused_but_stored}")
    if report.replies_refused_but_saved:
        out.append(
            f"  replies answered an error yet saved (an agent who retypes texts the patient twice): "
            f"{report.replies_refused_but_saved[:10]}"
        )
    if report.replies_failed:
        out.append(f"  replies failed by delivery: {report.replies_failed[:10]}")
    live = sum(sock.get("missing_live", 0) for sock in report.sockets)
    if live:
        out.append(
            f"  socket events not delivered live (only by the final resync): {live} (socket, event) pairs over "
            f"{sum(1 for sock in report.sockets if sock.get('missing_live'))} sockets"
        )
    for exit_ in report.exits:
        out.append(f"  PROCESS EXITED on its own: {exit_}")
    for exit_ in report.known_exits:
        out.append(f"  worker exited with a known upstream crash: {exit_}")
    if not report.healthy_before:
        out.append("  (the system was not healthy by /readyz?strict=1 when this fault began)")
    out.append("  /readyz?strict=1 (times from the fault's start): " + "; ".join(report.readyz))
    if report.logs:
        out.append("  server logs (noteworthy lines since the phase began, numbers folded):")
        out.extend(f"    {line}" for line in report.logs)
    return "\n".join(out)


def summary(reports: list[FaultReport]) -> dict[str, Any]:
    return {
        "ok": all(r.ok for r in reports),
        "table": table(reports),
        "faults": {r.name: r.as_json() | {"details": details(r)} for r in reports},
    }
