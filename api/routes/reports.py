"""The monthly 通报 table per unit, as JSON, CSV or XLSX."""

from __future__ import annotations

import csv
import io
from datetime import date
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import Response

from api import queries
from api.auth import scope_unit
from api.deps import ClickHouse, CurrentActor
from haochaping.domain.contract import now_beijing

router = APIRouter(prefix="/v1", tags=["reports"])

COLUMNS = (
    ("rank", "排名"),
    ("unit_code", "统一社会信用代码"),
    ("unit_name", "单位"),
    ("total", "评价数"),
    ("satisfaction_rate", "满意率"),
    ("bad_rate", "差评率"),
    ("score", "得分"),
    ("tickets", "台账问题数"),
    ("rectification_rate", "整改率"),
    ("callback_rate", "回访率"),
    ("overdue_rate", "超期率"),
)


def report_rows(rows: list[queries.ReportRow]) -> list[dict[str, Any]]:
    out = []
    for r in rows:
        f = r.figures.as_dict()
        out.append(
            {
                "rank": r.rank,
                "unit_code": r.unit_code,
                "unit_name": r.unit_name,
                "total": f["total"],
                "satisfaction_rate": f["satisfaction_rate"],
                "bad_rate": f["bad_rate"],
                "score": f["score"],
                "tickets": r.tickets,
                "rectification_rate": queries._round(r.rectification_rate),
                "callback_rate": queries._round(r.callback_rate),
                "overdue_rate": queries._round(r.overdue_rate),
            }
        )
    return out


def _csv(rows: list[dict[str, Any]]) -> bytes:
    buf = io.StringIO()
    writer = csv.writer(buf)
    writer.writerow([label for _, label in COLUMNS])
    for row in rows:
        writer.writerow(["" if row[k] is None else row[k] for k, _ in COLUMNS])
    # A BOM so that Excel on a Chinese Windows opens the UTF-8 file with the right characters.
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _xlsx(rows: list[dict[str, Any]], month: str) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Font

    wb = Workbook()
    ws = wb.active
    ws.title = f"{month} 通报"
    ws.append([label for _, label in COLUMNS])
    for cell in ws[1]:
        cell.font = Font(bold=True)
    percent = {"satisfaction_rate", "bad_rate", "rectification_rate", "callback_rate", "overdue_rate"}
    for row in rows:
        ws.append([row[k] for k, _ in COLUMNS])
        for i, (k, _) in enumerate(COLUMNS, start=1):
            if k in percent:
                ws.cell(row=ws.max_row, column=i).number_format = "0.00%"
    ws.column_dimensions["B"].width = 22
    ws.column_dimensions["C"].width = 36
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


@router.get(
    "/reports/monthly",
    summary="The monthly 通报 per unit: 满意率, 差评率, 整改率, 回访率, 超期率, rank",
    responses={
        200: {
            "content": {
                "application/json": {},
                "text/csv": {},
                "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": {},
            }
        }
    },
)
def monthly(
    actor: CurrentActor,
    client: ClickHouse,
    month: Annotated[
        str | None,
        Query(
            pattern=r"^20\d\d-(0[1-9]|1[0-2])$",
            description="YYYY-MM (2000-01 .. 2099-12); default: last month.",
        ),
    ] = None,
    format: Annotated[str, Query(pattern="^(json|csv|xlsx)$")] = "json",
    unit_code: str | None = None,
) -> Response:
    """Ranks cover every unit for supervisors and auditors; a unit officer gets their own row, with its
    rank among all units."""
    if month is None:
        today = now_beijing().date()
        first = date(today.year - (today.month == 1), (today.month - 2) % 12 + 1, 1)
    else:
        first = date(int(month[:4]), int(month[5:7]), 1)
    label = f"{first.year:04d}-{first.month:02d}"
    own = scope_unit(actor, unit_code)
    # Rank among all units, then cut to the officer's row: a rank among one is meaningless.
    rows = report_rows(queries.monthly_report(client, first, unit_code=None))
    if own is not None:
        rows = [r for r in rows if r["unit_code"] == own]
    if format == "csv":
        return Response(
            _csv(rows),
            media_type="text/csv; charset=utf-8",
            headers={"Content-Disposition": f'attachment; filename="tongbao-{label}.csv"'},
        )
    if format == "xlsx":
        return Response(
            _xlsx(rows, label),
            media_type="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            headers={"Content-Disposition": f'attachment; filename="tongbao-{label}.xlsx"'},
        )
    import orjson

    return Response(orjson.dumps({"month": label, "items": rows}), media_type="application/json")
