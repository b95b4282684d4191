"""The knobs of the stream's domain rules, read from one versioned YAML file.

The packaged ``rules.yaml`` holds the defaults of the domain reference (三色分级 triggers, deadlines
per colour, the repeat window, fraud and spike thresholds). A deployment's file
(``settings.streams.rules_file``) is merged over it: mappings are merged key by key, anything else
(a list of terms, a number) replaces the default. So a file with only
``deadlines: {blue: {resolution_working_days: 10}}`` changes that one figure and keeps the rest,
and a rule is switched off with ``enabled: false``.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from haochaping.domain.records import Colour

PACKAGED_RULES = Path(__file__).with_name("rules.yaml")

# Signals are triggers that are not words in the text; each rule with a ``signal`` names one.
Signal = Literal[
    "extra_urgent",  # 12345 特急
    "urgent",  # 12345 紧急
    "several_units",  # a complaint or report naming several units
    "repeat_window",  # repeated bad reviews of the same window
    "repeat_staff",  # repeated bad reviews of the same staff member
]


class _Config(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleSpec(_Config):
    """One triage rule: words in the text, tags the citizen picked, regular expressions, or a signal."""

    colour: Colour
    description: str = ""
    enabled: bool = True
    terms: tuple[str, ...] = ()
    tags: tuple[str, ...] = ()
    # Regular expressions over the normalised text (NFKC, simplified, lower case, no spaces), for
    # what a word list cannot say, e.g. "排队 3 个小时".
    patterns: tuple[str, ...] = ()
    signal: Signal | None = None

    @model_validator(mode="after")
    def _has_a_trigger(self) -> RuleSpec:
        if not (self.terms or self.tags or self.patterns or self.signal):
            raise ValueError("a rule needs at least one of terms, tags, patterns or signal")
        return self


class WorkOrderPolicy(_Config):
    # 投诉 and 举报 always open a ticket; 表扬 counts as good; 咨询 and 建议 are not judgements of a service.
    ticket_kinds: tuple[Literal["complaint", "report", "help", "inquiry", "suggestion"], ...] = (
        "complaint",
        "report",
    )
    # A 求助 (request for help) is not a judgement of a service and is handled in the hotline's own
    # flow, unless it is red (a safety risk, 特急, ...): then it must not wait in the hotline's queue.
    help_when_red: bool = True
    several_units_min: int = Field(default=2, ge=2)


class RepeatPolicy(_Config):
    """How many bad reviews of one window (or staff member) within how long make a repeat."""

    count: int = Field(default=3, ge=2)
    within_minutes: int = Field(default=120, ge=1)
    max_keys: int = Field(default=100_000, ge=1)

    @property
    def within(self) -> timedelta:
        return timedelta(minutes=self.within_minutes)


class ColourDeadlines(_Config):
    """Call-back in calendar hours (急事急办) or in working days; resolution in working days."""

    callback_hours: float | None = Field(default=None, gt=0)
    callback_working_days: int | None = Field(default=None, ge=0)
    resolution_working_days: int = Field(ge=0)

    @model_validator(mode="after")
    def _one_callback_rule(self) -> ColourDeadlines:
        if (self.callback_hours is None) == (self.callback_working_days is None):
            raise ValueError("set exactly one of callback_hours and callback_working_days")
        return self


class DeadlinesConfig(_Config):
    red: ColourDeadlines = ColourDeadlines(callback_hours=2, resolution_working_days=1)
    yellow: ColourDeadlines = ColourDeadlines(callback_working_days=1, resolution_working_days=5)
    blue: ColourDeadlines = ColourDeadlines(callback_working_days=1, resolution_working_days=15)
    # 预警 once this share of the time from opening to the deadline has passed.
    warning_share: float = Field(default=0.8, gt=0, lt=1)

    def for_colour(self, colour: Colour) -> ColourDeadlines:
        result: ColourDeadlines = getattr(self, colour.value)
        return result


class FraudConfig(_Config):
    top_stars: int = Field(default=5, ge=1, le=5)
    device_burst_count: int = Field(default=8, ge=2)
    device_burst_minutes: float = Field(default=3, gt=0)
    staff_burst_count: int = Field(default=8, ge=2)
    staff_burst_minutes: float = Field(default=3, gt=0)
    rater_cases: int = Field(default=5, ge=2)
    rater_minutes: float = Field(default=10, gt=0)
    max_keys: int = Field(default=200_000, ge=1)


class SpikeConfig(_Config):
    """A unit's bad-review rate over the last ``window_minutes`` against its own EWMA baseline."""

    window_minutes: int = Field(default=15, ge=1)
    baseline_half_life_minutes: float = Field(default=240, gt=0)
    factor: float = Field(default=2.0, gt=1)
    min_increase: float = Field(default=0.05, ge=0, le=1)  # absolute rise of the rate, e.g. 5 points
    min_bad: int = Field(default=5, ge=1)  # bad reviews in the window
    min_baseline_ratings: float = Field(default=50, ge=0)  # weight behind the baseline before it counts
    cooldown_minutes: int = Field(default=60, ge=0)
    max_units: int = Field(default=100_000, ge=1)


class DomainConfig(_Config):
    version: Literal[1]
    rules: dict[str, RuleSpec]
    workorders: WorkOrderPolicy = WorkOrderPolicy()
    repeats: RepeatPolicy = RepeatPolicy()
    deadlines: DeadlinesConfig = DeadlinesConfig()
    fraud: FraudConfig = FraudConfig()
    spike: SpikeConfig = SpikeConfig()


class ConfigError(ValueError):
    """A rules file that cannot be used; the message names the file and the field."""


def _merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _merge(base[key], value) if key in base else value
        return merged
    return over


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read rules file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"rules file {path} must hold a mapping at the top (version: 1, rules: ...)")
    return data


def load_config(path: Path | None = None) -> DomainConfig:
    """The packaged defaults, with ``path`` (a deployment's rules file) merged over them."""
    data = _read_yaml(PACKAGED_RULES)
    source = str(PACKAGED_RULES)
    if path is not None:
        override = _read_yaml(path)
        if override.get("version", 1) != 1:
            raise ConfigError(
                f"rules file {path}: version {override.get('version')!r} is unknown; expected 1"
            )
        data = _merge(data, override)
        source = f"{path} (over the packaged defaults)"
    try:
        return DomainConfig.model_validate(data)
    except ValidationError as exc:
        where = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors())
        raise ConfigError(f"rules file {source} is not valid: {where}") from exc
