"""Thin routes: each says what; api.queries and api.commands say how."""
