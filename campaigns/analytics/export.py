"""Analytics as CSV tables: aggregates only (campaign and segment names, counts, error codes), headers in
the active language, and every text cell made safe from spreadsheet formula injection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.utils.translation import gettext as _

from contactcenter.spreadsheets import Cell

__all__ = ["CsvTable", "campaign_table", "overview_table"]


@dataclass(frozen=True)
class CsvTable:
    header: list[str]
    rows: list[list[Cell]]


def _rate(value: float | None) -> Cell:
    return "" if value is None else value


def _of_sent(count: int, sent: int) -> Cell:
    return round(100 * count / sent, 1) if sent else ""


def campaign_table(data: dict[str, Any]) -> CsvTable:
    """One campaign's numbers, one per row: a long table a spreadsheet can filter by metric."""
    totals, rates = data["totals"], data["rates"]
    sent = totals["sent"]
    rows: list[list[Cell]] = [
        [_("Recipients"), "", totals["recipients"], ""],
        [_("Sent"), "", sent, ""],
        [_("Delivered"), "", totals["delivered"], _rate(rates["delivery"])],
        [_("Failed"), "", totals["failed"], _rate(rates["failure"])],
    ]
    for failure in data["failures"]:
        detail = f"{failure['error_code']} {failure['reason']}".strip()
        rows.append([_("Failed"), detail, failure["count"], _of_sent(failure["count"], sent)])
    rows.append([_("Skipped"), "", totals["skipped"], ""])
    rows += [[_("Skipped"), skip["label"], skip["count"], ""] for skip in data["skipped"]]
    rows += [
        [_("Pending"), "", totals["pending"], ""],
        [_("Deferred (quiet hours)"), "", totals["deferred"], ""],
        [_("Cancelled"), "", totals["cancelled"], ""],
        [_("Replied"), "", totals["replied"], _rate(rates["reply"])],
        [_("Opted out"), "", totals["opted_out"], _rate(rates["opt_out"])],
        [_("Converted (visited)"), "", totals["converted"], _rate(rates["conversion"])],
    ]
    return CsvTable([_("Metric"), _("Detail"), _("Count"), _("Share of sent")], rows)


def overview_table(data: dict[str, Any]) -> CsvTable:
    """One row per campaign launched in the period, with every counter and rate."""
    header = [
        _("Campaign"),
        _("Segment"),
        _("Status"),
        _("Launched"),
        _("Recipients"),
        _("Sent"),
        _("Delivered"),
        _("Failed"),
        _("Skipped"),
        _("Replied"),
        _("Opted out"),
        _("Converted (visited)"),
        _("Delivery rate %"),
        _("Reply rate %"),
        _("Opt-out rate %"),
        _("Conversion rate %"),
    ]
    rows: list[list[Cell]] = []
    for row in data["campaigns"]:
        c, t, r = row["campaign"], row["totals"], row["rates"]
        rows.append(
            [
                c["name"],
                c["segment_name"],
                c["status_label"],
                (c["launched_at"] or "")[:16].replace("T", " "),
                t["recipients"],
                t["sent"],
                t["delivered"],
                t["failed"],
                t["skipped"],
                t["replied"],
                t["opted_out"],
                t["converted"],
                _rate(r["delivery"]),
                _rate(r["reply"]),
                _rate(r["opt_out"]),
                _rate(r["conversion"]),
            ]
        )
    return CsvTable(header, rows)
