"""Provincial 好差评 interface records (省级好差评系统接口): the adapter to the contract.

Provincial platforms, and the hall devices that already report to them, exchange one flat record per
rating with string values. :func:`to_review` turns one into a :class:`~haochaping.domain.contract.Review`.

======================  ==============================  =================================================
provincial field        contract field                  conversion
======================  ==============================  =================================================
``areaCode``            ``region_code``                 as is (行政区划代码, 6/9/12 digits)
``deptCode``            ``unit_code``                   as is (统一社会信用代码, 18 characters)
``proDepart``           ``unit_name``                   as is
``taskCode``            ``item_code``                   as is (事项编码)
``taskName``            ``item_name``                   as is, optional
``projectNo``           ``case_no``                     as is (办件编号)
``proManager``          ``staff_id``                    as is when it is a code (A–Z a–z 0–9 _ . : -);
                                                        a name (e.g. 张三) becomes ``pm_`` + 16 hex digits
                                                        of its SHA-256, stable for the same name
``satisfaction``        ``stars``                       1 = 非常不满意 … 5 = 非常满意: already stars (NOT
                                                        the GB/T 39046 code, which runs the other way)
``evalDetail``          ``tags``                        split on commas (, or ，), blanks dropped
``writingEvaluation``   ``text``                        as is, optional
``assessTime``          ``rated_at``                    ``YYYY-MM-DD HH:MM:SS`` read as Beijing time (+08:00)
``assessNumber``        ``follow_up``                   1 first rating → false, 2 追评 → true
``pf``                  ``channel``                     per source table, default
                                                        :data:`~haochaping.domain.contract.PROVINCIAL_CHANNEL_CODES`
                                                        (1 web, 2 app, 3 qr, 4 hall_device, 5 hall_terminal,
                                                        6 hotline, 7 sms)
``userProp``            (checked, not carried)          1 person, 2 legal person; the contract has no field
``hallCode``            ``hall_id``                     optional, as is (sent by some hall devices)
``windowCode``          ``window_id``                   optional, as is
``deviceCode``          ``device_id``                   optional, as is
(none)                  ``event_id``                    ``prov_`` + 32 hex digits of SHA-256 over deptCode,
                                                        projectNo, taskCode and assessNumber: the same
                                                        rating sent twice gets the same id
(none)                  ``stage``                       ``overall``
======================  ==============================  =================================================

Values may arrive as strings or numbers; other fields are ignored (platforms add their own). A
problem is reported against the provincial field name (``/satisfaction``), never the contract's.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from haochaping.domain import contract
from haochaping.domain.contract import BEIJING, Channel, Review
from haochaping.domain.problems import Problem, problems_from_validation

ASSESS_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"

# contract field -> provincial field, to report a contract problem where the sender can find it.
FIELD_OF: dict[str, str] = {
    "region_code": "areaCode",
    "unit_code": "deptCode",
    "unit_name": "proDepart",
    "item_code": "taskCode",
    "item_name": "taskName",
    "case_no": "projectNo",
    "staff_id": "proManager",
    "stars": "satisfaction",
    "tags": "evalDetail",
    "text": "writingEvaluation",
    "rated_at": "assessTime",
    "follow_up": "assessNumber",
    "channel": "pf",
    "hall_id": "hallCode",
    "window_id": "windowCode",
    "device_id": "deviceCode",
}
REQUIRED = ("areaCode", "deptCode", "proDepart", "taskCode", "projectNo", "satisfaction", "assessTime", "pf")
_CODE = re.compile(contract.CODE_PATTERN)


class ProvincialRecordError(ValueError):
    """The record cannot become a review; ``problems`` name each provincial field that is wrong."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.pointer or '/'}: {p.message}" for p in problems))


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise TypeError
    text = str(value).strip()
    return text or None


def staff_id(pro_manager: str) -> str:
    """A code stays as sent; a person's name becomes a stable id (the contract's ids are ASCII codes)."""
    if _CODE.match(pro_manager) and len(pro_manager) <= 64:
        return pro_manager
    return "pm_" + hashlib.sha256(pro_manager.encode()).hexdigest()[:16]


def event_id(dept_code: str, project_no: str, task_code: str, assess_number: str) -> str:
    material = "\x1f".join((dept_code, project_no, task_code, assess_number)).encode()
    return "prov_" + hashlib.sha256(material).hexdigest()[:32]


def to_review(
    record: Mapping[str, Any],
    *,
    channel_codes: Mapping[str, Channel] = contract.PROVINCIAL_CHANNEL_CODES,
    received_at: datetime | None = None,
    sender: str | None = None,
) -> Review:
    """Convert one provincial record; raise :class:`ProvincialRecordError` naming every bad field."""
    problems: list[Problem] = []
    values: dict[str, str | None] = {}
    for name, raw in record.items():
        try:
            values[name] = _text(raw)
        except TypeError:
            problems.append(
                Problem(f"/{name}", f"expected a string or a number, got {type(raw).__name__}", "string_type")
            )
    for name in REQUIRED:
        if values.get(name) is None and not any(p.pointer == f"/{name}" for p in problems):
            problems.append(Problem(f"/{name}", "this field is required", "missing"))

    stars: int | None = None
    satisfaction = values.get("satisfaction")
    if satisfaction is not None:
        if satisfaction in ("1", "2", "3", "4", "5"):
            stars = int(satisfaction)
        else:
            problems.append(
                Problem(
                    "/satisfaction",
                    f"expected 1–5 (1 = 非常不满意 … 5 = 非常满意); got {satisfaction!r}",
                    "enum",
                )
            )

    rated_at: datetime | None = None
    assess_time = values.get("assessTime")
    if assess_time is not None:
        try:
            rated_at = datetime.strptime(assess_time, ASSESS_TIME_FORMAT).replace(tzinfo=BEIJING)
        except ValueError:
            problems.append(
                Problem(
                    "/assessTime",
                    f"expected YYYY-MM-DD HH:MM:SS in Beijing time, e.g. 2026-11-25 09:30:00; got {assess_time!r}",
                    "datetime_format",
                )
            )

    assess_number = values.get("assessNumber") or "1"
    if assess_number not in ("1", "2"):
        problems.append(
            Problem(
                "/assessNumber",
                f"expected 1 (first rating) or 2 (追评, follow-up); got {assess_number!r}",
                "enum",
            )
        )

    channel: Channel | None = None
    pf = values.get("pf")
    if pf is not None:
        channel = channel_codes.get(pf)
        if channel is None:
            known = ", ".join(f"{code} {ch.value}" for code, ch in channel_codes.items())
            problems.append(Problem("/pf", f"unknown channel code {pf!r}: expected one of {known}", "enum"))

    user_prop = values.get("userProp")
    if user_prop is not None and user_prop not in ("1", "2"):
        problems.append(
            Problem("/userProp", f"expected 1 (person) or 2 (legal person); got {user_prop!r}", "enum")
        )

    if problems:
        raise ProvincialRecordError(problems)

    tags = tuple(t.strip() for t in re.split("[,，]", values.get("evalDetail") or "") if t.strip())
    manager = values.get("proManager")
    dept_code = values["deptCode"] or ""
    project_no = values["projectNo"] or ""
    task_code = values["taskCode"] or ""
    fields: dict[str, Any] = {
        "event_id": event_id(dept_code, project_no, task_code, assess_number),
        "channel": channel,
        "stars": stars,
        "case_no": project_no,
        "region_code": values["areaCode"],
        "unit_code": dept_code,
        "unit_name": values["proDepart"],
        "item_code": task_code,
        "item_name": values.get("taskName"),
        "staff_id": staff_id(manager) if manager else None,
        "hall_id": values.get("hallCode"),
        "window_id": values.get("windowCode"),
        "device_id": values.get("deviceCode"),
        "rated_at": rated_at,
        "received_at": received_at,
        "tags": tags,
        "text": values.get("writingEvaluation"),
        "follow_up": assess_number == "2",
        "sender": sender,
    }
    try:
        return Review.model_validate(fields)
    except ValidationError as exc:
        mapped = []
        for problem in problems_from_validation(exc):
            head, _, tail = problem.pointer.lstrip("/").partition("/")
            # A tag index points into the comma-separated evalDetail: name the field, keep the index.
            pointer = "/" + FIELD_OF.get(head, head)
            message = (
                problem.message if not tail else f"item {tail} of the comma-separated list: {problem.message}"
            )
            mapped.append(Problem(pointer, message, problem.type))
        raise ProvincialRecordError(mapped) from None
