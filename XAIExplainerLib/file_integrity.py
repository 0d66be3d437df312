"""Is the whole image there? Header-promised voxel bytes vs the bytes in the file, before ITK reads it.

Why: ITK's NIfTI reader ignores short reads, so ``head -c 30000 scan.nii.gz > t.nii.gz`` loads as a volume whose
missing part is garbage, and the tool then segments and explains it with exit 0. Here each format's header is
parsed just far enough to know how many voxel bytes it promises, and the data (decompressed when needed, with the
gzip/zlib stream required to end properly) is counted. A shortfall is a :class:`VolumeReadError` naming the file and
both byte counts. Headers that cannot be parsed are left to ITK, which then reports its own error.

Formats: NIfTI-1/2 (``.nii``, ``.nii.gz``), NRRD (``.nrrd``, ``.nhdr`` with a detached raw/gzip data file) and
MetaImage (``.mha``, ``.mhd`` with LOCAL or detached, raw or zlib-compressed data).

While the NIfTI data streams by, float voxels are also checked for NaN/Inf: SimpleITK's NIfTI reader turns NaN into
0, so a check on the array it returns could never see them.
"""
from __future__ import annotations

import contextlib
import gzip
import math
import re
import struct
import zlib
from pathlib import Path
from typing import BinaryIO, Callable

import numpy as np
from .errors import VolumeReadError

_CHUNK = 1 << 20


class _Truncated(Exception):
    """A compressed stream ended before its end-of-stream marker."""


def check_voxel_data(path: Path) -> int:
    """Raise :class:`VolumeReadError` when ``path`` holds fewer voxel bytes than its header promises.

    Returns how many NaN/Inf voxels the file stores where the reader would hide them (SimpleITK's NIfTI reader
    turns NaN into 0), so that :func:`~XAIExplainerLib.volume.ensure_finite` can still refuse them; 0 otherwise.
    """
    name = path.name.lower()
    checker: Callable[[Path], int | None] | None = None
    if name.endswith((".nii", ".nii.gz")):
        checker = _check_nifti
    elif name.endswith((".nrrd", ".nhdr")):
        checker = _check_nrrd
    elif name.endswith((".mha", ".mhd")):
        checker = _check_metaimage
    if checker is None:
        return 0
    try:
        return int(checker(path) or 0)
    except _Truncated as exc:
        raise VolumeReadError(f"'{path}' is truncated: {exc}. Copy or export the file again.") from None


def _short(path: Path, expected: int, found: int, what: str = "voxel data") -> VolumeReadError:
    return VolumeReadError(
        f"'{path}' is truncated: its header promises {expected} bytes of {what}, the file holds {found}. "
        "Copy or export the file again."
    )


def _stream_length(handle: BinaryIO, compressed: bool, label: str, sink: Callable[[bytes], None] | None = None) -> int:
    """Length of the (decompressed) data from the handle's position on, each piece also handed to ``sink``.

    Compressed data is one or more gzip/zlib streams; each must reach its end-of-stream marker (else
    :class:`_Truncated`). Bytes after the last stream that do not start another one are ignored, as zlib readers
    do. Output is produced in bounded pieces, so a highly compressible volume never balloons in memory.
    """
    total, buffer = 0, b""
    decoder = zlib.decompressobj(wbits=47) if compressed else None  # 32 + 15: zlib or gzip header
    while True:
        if not buffer:
            buffer = handle.read(_CHUNK)
            if not buffer:
                break
        if decoder is None:
            piece, buffer = buffer, b""
        else:
            if decoder.eof:
                if buffer[:2] != b"\x1f\x8b":
                    return total  # trailing bytes that are not another gzip member
                decoder = zlib.decompressobj(wbits=47)
            try:
                piece = decoder.decompress(buffer, 1 << 24)
            except zlib.error as exc:
                raise _Truncated(f"its {label} compressed data is damaged ({exc})") from None
            buffer = decoder.unused_data if decoder.eof else decoder.unconsumed_tail
        total += len(piece)
        if sink is not None:
            sink(piece)
    if decoder is not None and not decoder.eof:
        raise _Truncated(f"its {label} compressed data ends before its end-of-stream marker")
    return total


class _NonFinite:
    """Counts NaN/Inf values in a byte stream of floats that starts ``skip`` bytes in (pieces of any length)."""

    def __init__(self, dtype: str, skip: int, count: int) -> None:
        self.dtype, self.skip = np.dtype(dtype), skip
        self.left, self.carry, self.bad = count * np.dtype(dtype).itemsize, b"", 0

    def __call__(self, piece: bytes) -> None:
        if self.skip:
            cut = min(self.skip, len(piece))
            piece, self.skip = piece[cut:], self.skip - cut
        piece = self.carry + piece[: max(self.left, 0)]
        self.left -= len(piece) - len(self.carry)
        usable = len(piece) - len(piece) % self.dtype.itemsize
        values = np.frombuffer(piece[:usable], self.dtype)
        self.bad += int(values.size - np.count_nonzero(np.isfinite(values)))
        self.carry = piece[usable:]


# ---- NIfTI --------------------------------------------------------------------------------------------------------
_NIFTI_FLOATS = {16: "f4", 64: "f8"}


def _nifti_layout(header: bytes) -> tuple[int, int, str | None] | None:
    """(data offset, voxel bytes, float dtype or None) from a NIfTI-1/2 header of either byte order, or None."""
    for endian in "<>":
        if len(header) >= 348 and struct.unpack(endian + "i", header[:4])[0] == 348:
            dims = struct.unpack(endian + "8h", header[40:56])
            datatype, bitpix = struct.unpack(endian + "2h", header[70:74])
            offset = int(struct.unpack(endian + "f", header[108:112])[0])
            if header[344:347] != b"n+1":  # "ni1": voxels in a separate .img file, not read here
                return None
            break
        if len(header) >= 540 and struct.unpack(endian + "i", header[:4])[0] == 540:
            datatype, bitpix = struct.unpack(endian + "2h", header[12:16])
            dims = struct.unpack(endian + "8q", header[16:80])
            offset = struct.unpack(endian + "q", header[168:176])[0]
            break
    else:
        return None
    rank = dims[0]
    if not 1 <= rank <= 7 or bitpix <= 0 or any(d < 1 for d in dims[1:rank + 1]):
        return None
    floats = _NIFTI_FLOATS.get(datatype)
    return max(offset, 348), math.prod(dims[1:rank + 1]) * bitpix // 8, endian + floats if floats else None


def _check_nifti(path: Path) -> int:
    compressed = path.name.lower().endswith(".gz")
    with open(path, "rb") as raw:
        if compressed and raw.read(2) != b"\x1f\x8b":
            return 0  # not gzip at all: ITK says what it is
        raw.seek(0)
        header = b""
        if compressed:
            with contextlib.suppress(EOFError, gzip.BadGzipFile, zlib.error), gzip.GzipFile(fileobj=raw) as stream:
                header = stream.read(540)
        else:
            header = raw.read(540)
        raw.seek(0)
        layout = _nifti_layout(header)
        if layout is None:
            return 0
        offset, expected, floats = layout
        counter = _NonFinite(floats, offset, expected // np.dtype(floats).itemsize) if floats else None
        total = _stream_length(raw, compressed, "NIfTI", counter)
    if total - offset < expected:
        raise _short(path, expected, max(0, total - offset))
    return counter.bad if counter is not None else 0


# ---- NRRD and MetaImage (text headers) ------------------------------------------------------------------------------
_NRRD_BYTES = (("block", 0), ("float", 4), ("double", 8), ("char", 1), ("int8", 1), ("short", 2), ("16", 2),
               ("longlong", 8), ("long long", 8), ("64", 8), ("int", 4), ("32", 4))


def _nrrd_type_bytes(name: str) -> int:
    name = name.strip().lower()
    if name in ("uchar", "signed char", "unsigned char", "uint8", "uint8_t", "int8_t"):
        return 1
    return next((size for key, size in _NRRD_BYTES if key in name), 0)


def _text_header(path: Path, separator: str, last_key: str | None) -> tuple[dict[str, str], int]:
    """Fields of a text header and its length in bytes (up to the blank line, or through ``last_key``'s line)."""
    fields: dict[str, str] = {}
    with open(path, "rb") as handle:
        offset = 0
        for line in iter(handle.readline, b""):
            offset += len(line)
            text = line.decode("latin-1").rstrip("\r\n")
            if not text.strip() and separator == ":":
                break
            key, sep, value = text.partition(separator)
            if sep and ":=" not in text:
                fields[key.strip().lower()] = value.strip()
            if last_key is not None and key.strip().lower() == last_key:
                break
            if offset > (1 << 20):  # no header is a megabyte long: not a text header
                return {}, 0
    return fields, offset


def _check_nrrd(path: Path) -> None:
    fields, header_len = _text_header(path, ":", None)
    sizes, type_bytes = fields.get("sizes", ""), _nrrd_type_bytes(fields.get("type", ""))
    encoding = fields.get("encoding", "raw").lower()
    if not sizes or not type_bytes or encoding not in ("raw", "gzip", "gz") or int(fields.get("line skip", 0) or 0):
        return  # ascii/hex/bzip2 or unusual layouts: ITK checks those itself
    expected = math.prod(int(s) for s in sizes.split()) * type_bytes
    skip = int(fields.get("byte skip", 0) or 0)
    detached = fields.get("data file", fields.get("datafile"))
    if detached is not None and ("%" in detached or detached.upper().startswith("LIST")):
        return  # a series of data files: not checked
    data_path, start = (path.parent / detached, 0) if detached is not None else (path, header_len)
    if not data_path.is_file():
        raise VolumeReadError(f"'{path}' names the data file '{detached}', which does not exist next to it.")
    with open(data_path, "rb") as handle:
        handle.seek(start)
        found = _stream_length(handle, encoding != "raw", "NRRD")
    found -= max(skip, 0) if skip != -1 else 0
    if found < expected:
        raise _short(path, expected, max(found, 0))


_MET_BYTES = {"MET_CHAR": 1, "MET_UCHAR": 1, "MET_SHORT": 2, "MET_USHORT": 2, "MET_INT": 4, "MET_UINT": 4,
              "MET_FLOAT": 4, "MET_LONG_LONG": 8, "MET_ULONG_LONG": 8, "MET_DOUBLE": 8}


def _check_metaimage(path: Path) -> None:
    fields, header_len = _text_header(path, "=", "elementdatafile")
    dims, type_bytes = fields.get("dimsize", ""), _MET_BYTES.get(fields.get("elementtype", "").upper(), 0)
    data_file = fields.get("elementdatafile", "")
    if not dims or not type_bytes or not data_file or "%" in data_file or data_file.upper().startswith("LIST"):
        return
    channels = int(fields.get("elementnumberofchannels", 1) or 1)
    expected = math.prod(int(d) for d in dims.split()) * type_bytes * channels
    local = data_file.upper() == "LOCAL"
    data_path, start = (path, header_len) if local else (path.parent / data_file, 0)
    if not data_path.is_file():
        raise VolumeReadError(f"'{path}' names the data file '{data_file}', which does not exist next to it.")
    header_size = int(fields.get("headersize", 0) or 0)
    compressed = fields.get("compresseddata", "false").lower() == "true"
    if header_size == -1 and not compressed:
        return  # data at the end of the file, whatever comes before: nothing to count
    with open(data_path, "rb") as handle:
        handle.seek(start + max(header_size, 0))
        found = _stream_length(handle, compressed, "MetaImage")
    if found < expected:
        raise _short(path, expected, max(found, 0))
