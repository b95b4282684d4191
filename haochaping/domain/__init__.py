"""The domain core: plain Python, no I/O."""
