"""haochaping: a real-time pipeline for 政务服务"好差评" (good/bad reviews of government services)."""

__version__ = "0.1.0"
