"""Argument types shared by the command-line modules: each refuses bad text with a message
argparse prints (exit 2)."""

from __future__ import annotations

import argparse


def positive_seconds(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        seconds = float("nan")
    if not 0 < seconds < 366 * 86400:  # also refuses nan and inf
        raise argparse.ArgumentTypeError(f"expected seconds > 0, found {text!r}")
    return seconds


def duration(text: str) -> float:
    from drivers.config_types import parse_duration

    try:
        return parse_duration(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected {exc}, found {text!r}") from None


def positive_int(text: str) -> int:
    if not (text.isascii() and text.isdigit() and int(text) > 0):
        raise argparse.ArgumentTypeError(f"expected a whole number > 0, found {text!r}")
    return int(text)
