"""SLURM's `--time` formats, read into minutes (what a partition's walltime is kept in)."""

from __future__ import annotations

import re

# minutes, minutes:seconds, hours:minutes:seconds, days-hours, days-hours:minutes,
# days-hours:minutes:seconds (sbatch(1), --time). minutes:seconds is refused as ambiguous:
# SLURM reads "4:00" as four minutes, a person writing a walltime means four hours.
_WITH_DAYS = re.compile(r"^(\d+)-(\d+)(?::(\d+))?(?::(\d+))?$")
_CLOCK = re.compile(r"^(\d+)(?::(\d+))?(?::(\d+))?$")


class SlurmTimeError(ValueError):
    pass


def hours_form(text: str) -> str:
    """`text` as H:MM:SS when it is a two-part clock ("4:00" -> "4:00:00"), else unchanged."""
    clock = _CLOCK.match(text.strip())
    if clock and clock.group(2) is not None and clock.group(3) is None:
        return f"{text.strip()}:00"
    return text


def _sexagesimal(value: str | None) -> int:
    """A minutes or seconds part: 0-59, as SLURM would refuse anything else."""
    number = int(value or 0)
    if number > 59:
        raise ValueError(value)
    return number


def parse_slurm_time(text: str) -> float:
    """Minutes in `text`; raises SlurmTimeError when it is not one of SLURM's forms."""
    stripped = text.strip()
    try:
        with_days = _WITH_DAYS.match(stripped)
        if with_days:
            days, hours, minutes, seconds = with_days.groups()
            if int(hours) > 23:
                raise ValueError(hours)
            total_s = (
                int(days) * 86400
                + int(hours) * 3600
                + _sexagesimal(minutes) * 60
                + _sexagesimal(seconds)
            )
            return total_s / 60
        clock = _CLOCK.match(stripped)
        if clock:
            first, second, third = clock.groups()
            if third is not None:  # hours:minutes:seconds
                return (int(first) * 3600 + _sexagesimal(second) * 60 + _sexagesimal(third)) / 60
            if second is not None:  # minutes:seconds to SLURM, hours:minutes to a reader
                raise SlurmTimeError(
                    f"walltime {text!r} is ambiguous: SLURM reads it as {int(first)} min "
                    f'{int(second)} s; write "{hours_form(stripped)}" for hours and minutes, '
                    f"or minutes as a number"
                )
            return float(first)
    except SlurmTimeError:
        raise
    except ValueError:  # a part out of range: not a SLURM time
        pass
    raise SlurmTimeError(
        f"walltime {text!r} is not a SLURM time: write minutes, HH:MM:SS, D-HH, "
        f'D-HH:MM or D-HH:MM:SS (e.g. "4:00:00" or "1-00:00:00")'
    )
