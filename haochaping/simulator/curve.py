"""The city's daily curve: how busy each channel is at each hour of a Beijing day.

Halls open 9:00–12:00 and 13:30–17:00 with a morning peak; the app and web peak in the evening; the
12345 hotline runs 7×24 with a daytime bump; SMS replies follow the halls (the invitation goes out when
a case is done). Weights are relative: 1.0 is the channel's busiest hour.
"""

from __future__ import annotations

from haochaping.domain.contract import Channel

_HALL = (0, 0, 0, 0, 0, 0, 0, 0, 0.2, 1.0, 0.95, 0.7, 0.15, 0.4, 0.85, 0.75, 0.55, 0.15, 0, 0, 0, 0, 0, 0)
_ONLINE = (
    0.08, 0.04, 0.02, 0.02, 0.02, 0.04, 0.1, 0.2, 0.35, 0.5, 0.55, 0.5,
    0.45, 0.45, 0.5, 0.5, 0.5, 0.55, 0.65, 0.85, 1.0, 0.95, 0.6, 0.25,
)  # fmt: skip
_HOTLINE = (
    0.25, 0.18, 0.15, 0.15, 0.15, 0.2, 0.3, 0.5, 0.8, 1.0, 1.0, 0.9,
    0.7, 0.8, 0.95, 0.95, 0.9, 0.8, 0.7, 0.65, 0.6, 0.5, 0.4, 0.3,
)  # fmt: skip
_SMS = (
    0.05, 0.02, 0.01, 0.01, 0.01, 0.02, 0.05, 0.15, 0.3, 0.6, 0.9, 1.0,
    0.7, 0.5, 0.6, 0.85, 0.95, 0.9, 0.7, 0.6, 0.5, 0.35, 0.2, 0.1,
)  # fmt: skip

# Peak-hour share of each channel in a whole day's ratings (the mix when everything is busy).
CHANNEL_SHARE: dict[Channel, float] = {
    Channel.HALL_DEVICE: 0.42,
    Channel.HALL_TERMINAL: 0.05,
    Channel.APP: 0.22,
    Channel.WEB: 0.08,
    Channel.QR: 0.05,
    Channel.SMS: 0.12,
    Channel.HOTLINE: 0.06,
}
HOURLY: dict[Channel, tuple[float, ...]] = {
    Channel.HALL_DEVICE: _HALL,
    Channel.HALL_TERMINAL: _HALL,
    Channel.APP: _ONLINE,
    Channel.WEB: _ONLINE,
    Channel.QR: _HALL,
    Channel.SMS: _SMS,
    Channel.HOTLINE: _HOTLINE,
}


def _at(series: tuple[float, ...], hour: float) -> float:
    # Linear between the hour marks, so a compressed day moves smoothly.
    h = hour % 24
    low = int(h)
    frac = h - low
    return series[low] * (1 - frac) + series[(low + 1) % 24] * frac


def channel_weights(hour: float) -> dict[Channel, float]:
    """Relative weight of each channel at ``hour`` (0–24, Beijing time)."""
    return {ch: CHANNEL_SHARE[ch] * _at(HOURLY[ch], hour) for ch in CHANNEL_SHARE}


def activity(hour: float) -> float:
    """How busy the whole city is at ``hour``, relative to the day's mean (mean over a day = 1)."""
    return sum(channel_weights(hour).values()) / _DAY_MEAN


_DAY_MEAN = sum(sum(channel_weights(h / 4).values()) for h in range(96)) / 96
