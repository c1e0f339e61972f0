"""Compression of pixels into weighted distinct values.

Integer images whose values fit in at most 24 bits per pixel (8-bit gray, 8-bit RGB, up to three
8-bit channels, 16-bit gray) and float16 gray images have few possible values. Each pixel is
encoded as one integer *code*; a histogram of the codes (``np.bincount``) gives every distinct value
with its pixel count. The solvers then run on these weighted points, whose number does not grow
with the image, and labels go back to every pixel through one look-up table indexed by code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CHUNK = 1 << 22  # pixels per chunk for passes over the whole image
HIST_CHUNK = 1 << 24  # pixels per bincount call: fewer calls, each allocating n_codes counters


@dataclass(frozen=True)
class Codec:
    """Maps a pixel's channel values to an integer code in ``[0, n_codes)`` and back."""

    dtype: np.dtype  # dtype of the pixel values (bool already viewed as uint8)
    n_channels: int
    bits: int  # bits per channel

    @property
    def n_codes(self) -> int:
        return 1 << (self.bits * self.n_channels)

    def encode(self, pixels: np.ndarray) -> np.ndarray:
        """Codes for ``(n, n_channels)`` pixels: uint16 for one 16-bit channel, else intp.

        Several 8-bit channels are packed little-endian: ``ch0 | ch1 << 8 | ch2 << 16``.
        """
        unsigned = np.dtype(f"u{self.dtype.itemsize}")
        if self.n_channels == 1:
            codes = pixels[:, 0].view(unsigned)
            if self.dtype.kind == "f":  # -0.0 and +0.0 are one value: give them one code
                return np.where(codes == 0x8000, np.uint16(0), codes)
            if self.dtype.kind == "i":
                codes = codes ^ self._sign()
            # 8-bit codes become intp once here: np.bincount and np.take would each convert them
            # (16-bit codes stay 2 bytes a pixel, converted chunk by chunk, to bound memory)
            return codes.astype(np.intp) if self.bits == 8 else codes
        codes = _pack_bytes(pixels.view(np.uint8))
        if self.dtype.kind == "i":
            codes ^= self._sign()
        return codes

    def _sign(self):
        """The sign bit of every channel: XOR with it maps signed values to ordered codes."""
        one = sum(1 << (self.bits * c + self.bits - 1) for c in range(self.n_channels))
        return np.dtype(np.uint32 if self.n_channels > 1 else f"u{self.dtype.itemsize}").type(one)

    def decode(self, codes: np.ndarray) -> np.ndarray:
        """Pixel values ``(m, n_channels)`` for the given codes."""
        codes = np.asarray(codes)
        if self.dtype.kind == "i":
            codes = codes ^ self._sign()
        unsigned = np.dtype(f"u{self.dtype.itemsize}")
        out = np.empty((codes.size, self.n_channels), unsigned)
        for c in range(self.n_channels):
            out[:, c] = (codes >> (self.bits * c)) & ((1 << self.bits) - 1)
        return out.view(self.dtype)


def _pack_bytes(px: np.ndarray) -> np.ndarray:
    """Pack ``(n, c)`` bytes (c = 2 or 3) into intp codes, ``px[:, 0]`` in the lowest byte."""
    n, c = px.shape
    mask = (1 << (8 * c)) - 1
    if px.flags.c_contiguous and n >= 2:
        # Read 4 bytes at every pixel start (an unaligned, overlapping uint32 view of the rows)
        # and mask off the bytes of the next pixel: one pass, no per-channel temporaries.
        rows = np.ndarray((n - 1,), dtype="<u4", buffer=px.reshape(-1), strides=(c,))
        out = np.empty(n, np.intp)  # intp: what np.bincount and np.take index with
        np.bitwise_and(rows, mask, out=out[:-1])
        out[-1] = sum(int(px[-1, i]) << (8 * i) for i in range(c))
        return out
    out = px[:, c - 1].astype(np.intp)
    for i in range(c - 2, -1, -1):
        out <<= 8
        out |= px[:, i]
    return out


def codec_for(dtype, n_channels: int) -> Codec | None:
    """The codec for pixels of this dtype and channel count, or None if they do not compress."""
    dtype = np.dtype(dtype)
    if dtype.kind == "b":
        dtype = np.dtype(np.uint8)
    if dtype.kind in "ui" and dtype.itemsize == 1 and n_channels <= 3:
        return Codec(dtype, n_channels, 8)
    if dtype.kind in "uif" and dtype.itemsize == 2 and n_channels == 1:
        return Codec(dtype, 1, 16)
    return None


@dataclass(frozen=True)
class Compressed:
    """The distinct valid pixel values of an image, with counts and per-pixel codes.

    ``codes[i]`` is pixel i's code; ``distinct`` holds the codes present among valid pixels (sorted),
    ``values`` their decoded pixel values ``(m, n_channels)`` and ``counts`` their pixel counts.
    """

    codec: Codec
    codes: np.ndarray
    distinct: np.ndarray
    values: np.ndarray
    counts: np.ndarray


def compress(pixels: np.ndarray, valid: np.ndarray | None) -> Compressed | None:
    """Compress ``(n, n_channels)`` pixels, or return None if their dtype does not compress."""
    codec = codec_for(pixels.dtype, pixels.shape[1])
    if codec is None:
        return None
    codes = codec.encode(pixels)
    if codes.size * 4 < codec.n_codes:  # few pixels for many possible codes: sorting is cheaper
        distinct, counts = np.unique(codes if valid is None else codes[valid], return_counts=True)
    else:
        hist = None
        for s in range(0, codes.size, HIST_CHUNK):
            part = codes[s : s + HIST_CHUNK]
            if valid is not None:
                part = part[valid[s : s + HIST_CHUNK]]
            counts = np.bincount(part, minlength=codec.n_codes)
            if hist is None:
                hist = counts
            else:
                hist += counts
        distinct = np.flatnonzero(hist.astype(bool))
        counts = hist[distinct]
    values = codec.decode(distinct)
    if values.dtype.kind == "f":  # float16: drop NaN/inf codes (they are masked already)
        keep = np.isfinite(values).all(axis=1)
        distinct, values, counts = distinct[keep], values[keep], counts[keep]
    return Compressed(codec, codes, distinct, values, counts)


def lookup(lut: np.ndarray, codes: np.ndarray, valid: np.ndarray | None, fill=0) -> np.ndarray:
    """``lut[codes]`` in chunks (bounded temporary memory), with ``fill`` where not ``valid``."""
    out = np.empty(codes.shape, lut.dtype)
    for s in range(0, codes.size, CHUNK):
        np.take(lut, codes[s : s + CHUNK], out=out[s : s + CHUNK])
    if valid is not None:
        out[~valid] = fill
    return out
