"""CRC16 check of a framed telegram (pipeline stage: crc)."""

from __future__ import annotations

import re

import crcmod

# DSMR 4+ uses CRC-16/ARC: polynomial 0x8005 reflected, initial value 0, no final XOR.
_crc16_arc = crcmod.mkCrcFun(0x18005, rev=True, initCrc=0x0000, xorOut=0x0000)


def crc16(data: bytes) -> int:
    """CRC-16/ARC of ``data``."""
    return _crc16_arc(data)


_DSMR_VERSION = re.compile(rb"\n1-3:0\.2\.8\((\d+)\)")
_EMUCS_VERSION = b"\n0-0:96.1.4("


def requires_crc(body: bytes) -> bool | None:
    """Whether the telegram's own version line says it must carry a CRC: DSMR 4.0 and later, and every
    Belgian e-MUCS meter, always send one; DSMR 2.2/3 never do.  None when it declares no version."""
    if _EMUCS_VERSION in body:
        return True
    found = _DSMR_VERSION.search(body)
    if found is None:
        return None
    return int(found.group(1)[:1]) >= 4


def check(body: bytes, crc_text: str) -> bool | None:
    """Check a telegram body (``/`` through ``!``) against the hex CRC that followed it.

    Returns None when the telegram carries no CRC (DSMR 2.2/3), else whether it matches.
    The comparison is numeric because some meters print the CRC without leading zeros.
    """
    if not crc_text:
        return None
    return _crc16_arc(body) == int(crc_text, 16)
