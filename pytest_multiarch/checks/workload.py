"""The replication workload: rows of the types whose handling differs across architectures.

Integers at their limits (BIGINT UNSIGNED max included), FLOAT/DOUBLE with denormals, negative
zero and random bit patterns, DECIMAL(65,30) at full width, utf8mb4 text with emoji and 4-byte
characters, BLOBs holding every byte value, DATETIME(6)/TIME(6)/TIMESTAMP(6), JSON and NULLs.
Row ``n`` is a pure function of ``n`` and the seed, so a run can be repeated and a difference
named by its primary key.  Row ``n`` goes to ``TABLES[n % len(TABLES)]``.
"""

from __future__ import annotations

import json
import math
import random
import struct
from collections.abc import Callable
from typing import Any

DATABASE = "multiarch_check"

SCHEMA: dict[str, str] = {
    "mx_numbers": """(
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        ti TINYINT NULL, uti TINYINT UNSIGNED NULL, si SMALLINT NULL, usi SMALLINT UNSIGNED NULL,
        mi MEDIUMINT NULL, umi MEDIUMINT UNSIGNED NULL, i INT NULL, ui INT UNSIGNED NULL,
        bi BIGINT NULL, ubi BIGINT UNSIGNED NULL, bits BIT(64) NULL,
        f FLOAT NULL, d DOUBLE NULL, dec65 DECIMAL(65,30) NULL, money DECIMAL(12,2) NULL
    ) ENGINE=InnoDB""",
    "mx_text": """(
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        label VARCHAR(191) CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        body TEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
        data BLOB NULL,
        doc JSON NULL
    ) ENGINE=InnoDB""",
    "mx_temporal": """(
        id BIGINT UNSIGNED NOT NULL PRIMARY KEY,
        dt DATETIME(6) NULL, ts TIMESTAMP(6) NULL DEFAULT NULL, d DATE NULL, t TIME(6) NULL,
        y YEAR NULL
    ) ENGINE=InnoDB""",
}
TABLES: tuple[str, ...] = tuple(SCHEMA)

_INT_LIMITS = {
    "ti": (-(2**7), 2**7 - 1),
    "uti": (0, 2**8 - 1),
    "si": (-(2**15), 2**15 - 1),
    "usi": (0, 2**16 - 1),
    "mi": (-(2**23), 2**23 - 1),
    "umi": (0, 2**24 - 1),
    "i": (-(2**31), 2**31 - 1),
    "ui": (0, 2**32 - 1),
    "bi": (-(2**63), 2**63 - 1),
    "ubi": (0, 2**64 - 1),
}
_FLOATS = [
    0.0,
    -0.0,
    1.401298464324817e-45,
    -1.401298464324817e-45,
    1.1754943508222875e-38,
    3.4028234663852886e38,
    -3.4028234663852886e38,
    0.1,
    1 / 3,
    16777217.0,
]
_DOUBLES = [
    0.0,
    -0.0,
    5e-324,
    -5e-324,
    2.2250738585072014e-308,
    2.225073858507201e-308,
    1.7976931348623157e308,
    -1.7976931348623157e308,
    0.1,
    math.pi,
    2.0**53 + 1,
]
_DEC65 = [
    "9" * 35 + "." + "9" * 30,
    "-" + "9" * 35 + "." + "9" * 30,
    "0." + "0" * 29 + "1",
    "-0." + "0" * 29 + "1",
    "0",
    "12345678901234567890.123456789012345678901234567890",
]
_TEXTS = [
    "",
    "plain ascii",
    "emoji \U0001f600\U0001f680 family \U0001f469\u200d\U0001f469\u200d\U0001f467",
    "flag \U0001f1fa\U0001f1f3 math \U0001d49c",
    "combining e\u0301 vs precomposed \u00e9",
    "RTL \u05e2\u05d1\u05e8\u05d9\u05ea \u0627\u0644\u0639\u0631\u0628\u064a\u0629",
    "CJK \u6f22\u5b57 \u304b\u306a \u30ab\u30ca \ud55c\uad6d\uc5b4",
    "quotes ' \" \\ % _ `",
    "controls \t\n\r\x00\x1f end",
    "edges \U0010ffff \uffff \u0080",
    "BOM \ufeff ZWJ \u200d",
]
_BLOBS = [bytes(range(256)), b"", b"\x00" * 64, b"\xff" * 64, bytes(range(255, -1, -1))]
_DATETIMES = [
    "1000-01-01 00:00:00.000000",
    "9999-12-31 23:59:59.999999",
    "1970-01-01 00:00:00.000001",
    "2038-01-19 03:14:08.000000",
    "2024-02-29 12:34:56.789012",
]
_TIMESTAMPS = [
    "1970-01-01 00:00:01.000000",
    "2038-01-19 03:14:07.999999",
    "2000-02-29 00:00:00.000001",
]
_TIMES = ["-838:59:59.000000", "838:59:59.000000", "00:00:00.000001", "-00:00:00.000001"]
_DATES = ["1000-01-01", "9999-12-31", "2000-02-29"]
_YEARS = [1901, 2155, 2000]


def _pick(
    n: int, specials: list[Any], rng: random.Random, make: Callable[[random.Random], Any]
) -> Any:
    """Every other row takes the next special value, the rest a random one."""
    return specials[(n // 2) % len(specials)] if n % 2 == 0 else make(rng)


def _random_float32(rng: random.Random) -> float:
    while True:
        value: float = struct.unpack("<f", rng.getrandbits(32).to_bytes(4, "little"))[0]
        if math.isfinite(value):
            return value


def _random_double(rng: random.Random) -> float:
    while True:
        value: float = struct.unpack("<d", rng.getrandbits(64).to_bytes(8, "little"))[0]
        if math.isfinite(value):
            return value


def _random_decimal(rng: random.Random) -> str:
    sign = "-" if rng.random() < 0.5 else ""
    return f"{sign}{rng.randrange(10**35)}.{rng.randrange(10**30):030d}"


def _random_text(rng: random.Random, size: int) -> str:
    ranges = [
        (0x20, 0x7E),
        (0xA0, 0x2FF),
        (0x400, 0x4FF),
        (0x4E00, 0x9FFF),
        (0x1F300, 0x1FAFF),
        (0x10000, 0x1000F),
    ]
    chars = []
    for _ in range(size):
        lo, hi = rng.choice(ranges)
        chars.append(chr(rng.randint(lo, hi)))
    return "".join(chars)


def _random_time(rng: random.Random, lo_hour: int, hi_hour: int) -> str:
    return (
        f"{rng.randint(lo_hour, hi_hour):02d}:{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}"
        f".{rng.randrange(10**6):06d}"
    )


def _random_datetime(rng: random.Random, lo_year: int = 1000, hi_year: int = 9999) -> str:
    return (
        f"{rng.randint(lo_year, hi_year):04d}-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d} "
        + _random_time(rng, 0, 23)
    )


def _numbers(n: int, rng: random.Random) -> tuple[Any, ...]:
    ints = []
    for lo, hi in _INT_LIMITS.values():
        choice = n % 6
        ints.append([lo, hi, 0, max(lo, -1), hi - 1, rng.randint(lo, hi)][choice])
    bits = [0, 2**64 - 1, 1, 2**63][n % 4] if n % 3 == 0 else rng.getrandbits(64)
    return (
        n,
        *ints,
        bits,
        _pick(n, _FLOATS, rng, _random_float32),
        _pick(n, _DOUBLES, rng, _random_double),
        _pick(n, _DEC65, rng, _random_decimal),
        f"{rng.randrange(10**10)}.{rng.randrange(100):02d}",
    )


def _text(n: int, rng: random.Random) -> tuple[Any, ...]:
    label = _pick(n, _TEXTS, rng, lambda r: _random_text(r, r.randint(0, 60)))
    body = _random_text(rng, rng.randint(0, 400)) + _TEXTS[n % len(_TEXTS)]
    data = _pick(n, _BLOBS, rng, lambda r: r.randbytes(r.randint(0, 1024)))
    doc = json.dumps(
        {
            "n": n,
            "ubig": 2**64 - 1,
            "ibig": -(2**63),
            "f": 0.1,
            "tiny": 5e-324,
            "neg_zero": -0.0,
            "s": label,
            "list": [1, 2.5, None, True, False],
            "nested": {"a": {"b": [n, str(n)]}},
        },
        ensure_ascii=n % 2 == 0,
    )
    return (n, label, body, data, doc)


def _temporal(n: int, rng: random.Random) -> tuple[Any, ...]:
    return (
        n,
        _pick(n, _DATETIMES, rng, _random_datetime),
        _pick(n, _TIMESTAMPS, rng, lambda r: _random_datetime(r, 1971, 2037)),
        _pick(n, _DATES, rng, lambda r: _random_datetime(r)[:10]),
        _pick(
            n,
            _TIMES,
            rng,
            lambda r: r.choice(["", "-"]) + _random_time(r, 0, 838),
        ),
        _pick(n, _YEARS, rng, lambda r: r.randint(1901, 2155)),
    )


_MAKERS: dict[str, Callable[[int, random.Random], tuple[Any, ...]]] = {
    "mx_numbers": _numbers,
    "mx_text": _text,
    "mx_temporal": _temporal,
}


def table_of(n: int) -> str:
    return TABLES[n % len(TABLES)]


def row(n: int, seed: int = 0) -> tuple[Any, ...]:
    """Row ``n`` of ``table_of(n)``; every 7th row leaves its nullable columns NULL."""
    rng = random.Random(seed * 1_000_003 + n)
    values = _MAKERS[table_of(n)](n, rng)
    if n % 7 == 3:
        return (values[0],) + (None,) * (len(values) - 1)
    return values


def insert_sql(table: str) -> str:
    width = len(_MAKERS[table](0, random.Random(0)))
    return f"INSERT INTO `{DATABASE}`.`{table}` VALUES ({', '.join(['%s'] * width)})"
