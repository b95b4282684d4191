"""The simulated city's structure: regions, halls, units (with 统一社会信用代码), windows, staff, items.

Read from a small YAML file (``city.yaml`` beside this module is the default) and expanded: each unit
template is instantiated in each region, with a computed, check-digit-valid unit code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from haochaping.simulator.codes import make_unit_code, unit_code_problem

DEFAULT_CITY_FILE = Path(__file__).with_name("city.yaml")


class CityFileError(ValueError):
    """The city file cannot be used; the message names the file, the place and what would be right."""


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RegionSpec(_Spec):
    code: str = Field(pattern=r"^\d{6}$")
    name: str
    weight: float = Field(default=1.0, gt=0)
    quality: float = Field(default=1.0, gt=0)


class UnitSpec(_Spec):
    key: str = Field(pattern=r"^[a-z][a-z0-9_]{0,15}$")
    name: str
    serial: int = Field(ge=0, le=9999, description="Makes the organisation code body with the region code.")
    code: str | None = Field(default=None, description="An explicit unit code (only for a single region).")
    windows: int = Field(default=2, ge=1, le=99)
    staff_per_window: int = Field(default=1, ge=1, le=9)
    weight: float = Field(default=1.0, gt=0)
    quality: float = Field(default=1.0, gt=0)
    items: list[tuple[str, str]] = Field(min_length=1)

    @field_validator("items")
    @classmethod
    def _item_suffixes(cls, items: list[tuple[str, str]]) -> list[tuple[str, str]]:
        for suffix, _ in items:
            if not suffix.replace("-", "").isalnum():
                raise ValueError(f"an item suffix is letters, digits and '-', e.g. XK-01; got {suffix!r}")
        return items


class CitySpec(_Spec):
    name: str
    hall_name: str = "{region}政务服务中心"
    regions: list[RegionSpec] = Field(min_length=1)
    units: list[UnitSpec] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class Item:
    code: str  # 事项编码
    name: str


@dataclass(frozen=True, slots=True)
class Window:
    window_id: str
    staff_ids: tuple[str, ...]
    device_id: str  # the evaluation device (评价器) at this window


@dataclass(frozen=True, slots=True)
class Unit:
    code: str  # 统一社会信用代码
    name: str
    key: str
    region_code: str
    hall_id: str
    weight: float  # share of the traffic within the city
    quality: float  # bad-review propensity, 1.0 = the city's mix
    items: tuple[Item, ...]
    windows: tuple[Window, ...]


@dataclass(frozen=True, slots=True)
class Hall:
    hall_id: str
    name: str
    region_code: str


@dataclass(frozen=True, slots=True)
class Region:
    code: str  # 行政区划代码
    name: str


@dataclass(frozen=True, slots=True)
class City:
    name: str
    regions: tuple[Region, ...]
    halls: tuple[Hall, ...]
    units: tuple[Unit, ...]

    def unit(self, code: str) -> Unit:
        for unit in self.units:
            if unit.code == code:
                return unit
        raise KeyError(code)

    @property
    def windows(self) -> tuple[Window, ...]:
        return tuple(w for u in self.units for w in u.windows)


def build_city(spec: CitySpec) -> City:
    regions: list[Region] = []
    halls: list[Hall] = []
    units: list[Unit] = []
    seen_codes: dict[str, str] = {}
    for region in spec.regions:
        regions.append(Region(region.code, region.name))
        hall_id = f"hall-{region.code}"
        halls.append(Hall(hall_id, spec.hall_name.format(region=region.name), region.code))
        for template in spec.units:
            if template.code is not None and len(spec.regions) > 1:
                raise CityFileError(
                    f"unit {template.key!r} gives an explicit code but the city has {len(spec.regions)} "
                    "regions: leave `code` out so each region's unit gets its own"
                )
            code = template.code or make_unit_code(region.code, f"{region.code[2:]}{template.serial:04d}")
            problem = unit_code_problem(code)
            if problem:
                raise CityFileError(f"unit {template.key!r} in {region.name}: {problem}")
            name = template.name.format(region=region.name)
            if code in seen_codes:
                raise CityFileError(
                    f"units {seen_codes[code]!r} and {name!r} have the same code {code}: give each "
                    "unit template its own `serial`"
                )
            seen_codes[code] = name
            windows = tuple(
                Window(
                    window_id=f"{region.code}-{template.key}-w{w:02d}",
                    staff_ids=tuple(
                        f"{region.code}-{template.key}-s{w:02d}{s}"
                        for s in range(1, template.staff_per_window + 1)
                    ),
                    device_id=f"dev-{region.code}-{template.key}-{w:02d}",
                )
                for w in range(1, template.windows + 1)
            )
            items = tuple(
                Item(f"{region.code}-{template.serial:04d}-{suffix}", item_name)
                for suffix, item_name in template.items
            )
            units.append(
                Unit(
                    code=code,
                    name=name,
                    key=template.key,
                    region_code=region.code,
                    hall_id=hall_id,
                    weight=template.weight * region.weight,
                    quality=template.quality * region.quality,
                    items=items,
                    windows=windows,
                )
            )
    return City(spec.name, tuple(regions), tuple(halls), tuple(units))


def load_city(path: Path | None = None) -> City:
    """Read and expand a city file; errors name the file, the field and what is expected."""
    path = path or DEFAULT_CITY_FILE
    try:
        raw: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CityFileError(f"cannot read the city file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise CityFileError(f"{path} is not valid YAML: {exc}") from exc
    try:
        spec = CitySpec.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"  {'.'.join(str(p) for p in err['loc']) or '(top)'}: {err['msg']}"
            for err in exc.errors(include_url=False)
        ]
        raise CityFileError(f"{path} does not describe a city:\n" + "\n".join(lines)) from exc
    try:
        return build_city(spec)
    except CityFileError as exc:
        raise CityFileError(f"{path}: {exc}") from exc
