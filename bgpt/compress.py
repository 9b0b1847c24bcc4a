"""A byte model is a compressor: arithmetic coding driven by the model's next-byte distributions.

What is coded is exactly what bits per byte counts (`bgpt.evaluate`): the data bytes of a file
and the symbol that ends them (the first PAD after the data), in the stream layout of
`bgpt.stream` (header patch of the file's extension, data patches, end patch), window by window
as `stream.eval_windows` scores a long file. So a file of n bytes at BPB b compresses to about
b * n / 8 bytes plus a small header, and back, exactly.

Exactness. The decoder learns each byte only after decoding it, so it must run the model
incrementally: the patch decoder once per completed patch, the byte decoder once per symbol,
both with key/value caches, batch 1, fp32, no autocast. The encoder runs that very computation
(`_run`, one function for both sides) rather than a teacher-forced forward whose float rounding
would differ. Each step's logits go through one function, `quantize`, to integer frequencies
(every symbol >= 1, summing to 2**PRECISION); the range coder (`constriction`) is given those
integers, so encoder and decoder see the same numbers. Bit-identical logits need the same
software and hardware on both sides (same torch build, same kind of CPU or GPU); a file decoded
elsewhere is either exact or rejected by the CRC32 of the original, never silently wrong.

The .bgz format (all integers little-endian; "varint" is unsigned LEB128):

    magic        4 bytes  b"BGZ" + format version (1)
    flags        1 byte   low 4 bits: windowing scheme (1 = stream.eval_windows, EOF coded),
                          high 4 bits: compute, 2 x weights + device: weights 0 fp32,
                          1 bf16, 2 fp16, 3 int8 (`bgpt.config.WEIGHTS`); device 0 CPU, 1 CUDA
    fingerprint  8 bytes  first 8 bytes of sha256(model config + weights), see `fingerprint`
    patch size   varint   S of the model
    max patches  varint   L of the model (windows of L patches)
    length       varint   n, bytes of the original
    crc32        4 bytes  CRC-32 of the original
    payload      varint   bytes of range-coder output that follow the header (a multiple of 4)
    extension    1 byte e, then e bytes: the original's extension (UTF-8), its header patch
    header crc32 4 bytes  CRC-32 of every header byte before it
    payload      the range coder's 32-bit words

The decoder checks, in order: magic, version, header CRC, sizes (a truncated or padded file is
reported before any decoding), the fingerprint (a different model is reported before decoding),
then decodes at most n + 1 symbols: the stream must end (PAD) exactly after n bytes, and the
result must match the CRC-32.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from bgpt.config import WEIGHTS
from bgpt.errors import BGPTError
from bgpt.model import BGPT
from bgpt.quantize import weights_of
from bgpt.stream import PAD, VOCAB_SIZE, header_patch, iter_eval_windows

MAX_LENGTH = 1 << 30
"""Largest original a .bgz holds (1 GiB: days of coding at this model's KB/s); a header that
claims more is refused before anything is decoded."""
MAGIC = b"BGZ"
VERSION = 1
SCHEME_EVAL_WINDOWS = 1
"""Windowing scheme 1: `stream.eval_windows` over the file's stream; the EOF symbol is coded."""
COMPUTE = {"cpu": 0, "cuda": 1}
"""Device codes of the header's compute field (2 x weights + device)."""
PRECISION = 24
"""Bits of the integer frequencies; constriction's range coder works at 24 bits too."""
TOTAL = 1 << PRECISION
SUFFIX = ".bgz"
FINGERPRINT_BYTES = 8
MAX_EXT_BYTES = 255


class FormatError(BGPTError):
    """A .bgz file that cannot be decompressed: foreign, truncated, corrupt or for another model."""


# ----------------------------------------------------------------------------- quantisation


def quantize(logits: torch.Tensor) -> np.ndarray:
    """Next-symbol logits (257,) -> integer frequencies (257,) int64, each >= 1, summing to
    2**PRECISION. The one place where floats become the coder's integers: encoder and decoder
    both call it on bit-identical logits of the same shape.

    freq = floor(p * (2**PRECISION - 257)) + 1; the rounding remainder goes to the most likely
    symbol (lowest index on ties)."""
    x = logits.detach().to("cpu", torch.float64).numpy().reshape(VOCAB_SIZE)
    p = np.exp(x - x.max())
    p /= p.sum()
    freq = np.floor(p * (TOTAL - VOCAB_SIZE)).astype(np.int64) + 1
    freq[int(np.argmax(freq))] += TOTAL - int(freq.sum())
    return freq


def _as_probabilities(freq: np.ndarray) -> np.ndarray:
    """Frequencies as constriction's (1, 257) float64 table: exact (integers below 2**53)."""
    return freq.astype(np.float64).reshape(1, VOCAB_SIZE)


def _coder_model():
    try:
        import constriction
    except ImportError:
        raise BGPTError(
            "compression needs the constriction package: pip install 'bgpt[compress]'"
        ) from None
    return constriction, constriction.stream.model.Categorical(perfect=False)


# ----------------------------------------------------------------------------- fingerprint


def fingerprint(model: BGPT) -> bytes:
    """First 8 bytes of sha256 over the model's config (JSON, sorted keys) and every tensor of
    its state dict (name, dtype, shape, raw bytes) in key order. Compute it once per load."""
    h = hashlib.sha256()
    h.update(json.dumps(model.config.to_dict(), sort_keys=True).encode())
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().to("cpu").contiguous()
        h.update(f"\0{name}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.digest()[:FINGERPRINT_BYTES]


# ----------------------------------------------------------------------------- header


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _read_varint(buf: io.BytesIO, what: str) -> int:
    n = shift = 0
    for _ in range(10):  # 64 bits at most
        b = buf.read(1)
        if not b:
            raise FormatError(f"truncated file (the header ends inside its {what})")
        n |= (b[0] & 0x7F) << shift
        if not b[0] & 0x80:
            return n
        shift += 7
    raise FormatError(f"corrupt header ({what} is not a valid number)")


@dataclass(frozen=True)
class Header:
    """What a .bgz file says about itself."""

    fingerprint: bytes
    patch_size: int
    max_patches: int
    length: int
    crc32: int
    payload_bytes: int
    ext: str
    scheme: int = SCHEME_EVAL_WINDOWS
    compute: str = "cpu"
    weights: str = "fp32"

    def to_bytes(self) -> bytes:
        ext = self.ext.encode("utf-8")
        head = b"".join(
            [
                MAGIC,
                bytes([VERSION, self.scheme | _compute_code(self.compute, self.weights) << 4]),
                self.fingerprint,
                _varint(self.patch_size),
                _varint(self.max_patches),
                _varint(self.length),
                self.crc32.to_bytes(4, "little"),
                _varint(self.payload_bytes),
                bytes([len(ext)]),
                ext,
            ]
        )
        return head + zlib.crc32(head).to_bytes(4, "little")

    @property
    def size(self) -> int:
        return len(self.to_bytes())


def read_header(blob: bytes) -> Header:
    """Parse and check a .bgz header (magic, version, header CRC, sizes); FormatError if bad."""
    if not blob:
        raise FormatError("empty file, not a .bgz")
    if len(blob) < len(MAGIC) + 1 or blob[: len(MAGIC)] != MAGIC:
        if MAGIC.startswith(blob[: len(MAGIC)]) and len(blob) < len(MAGIC) + 1:
            raise FormatError("truncated file (shorter than the .bgz magic)")
        raise FormatError("not a bgpt compressed file (no .bgz magic)")
    if blob[3] != VERSION:
        raise FormatError(f"format version {blob[3]}; this bgpt reads version {VERSION}")
    buf = io.BytesIO(blob)
    buf.seek(len(MAGIC) + 1)

    def take(k: int, what: str) -> bytes:
        b = buf.read(k)
        if len(b) < k:
            raise FormatError(f"truncated file (the header ends inside its {what})")
        return b

    flags = take(1, "flags")[0]
    fp = take(FINGERPRINT_BYTES, "fingerprint")
    s = _read_varint(buf, "patch size")
    lmax = _read_varint(buf, "max patches")
    n = _read_varint(buf, "length")
    crc = int.from_bytes(take(4, "checksum"), "little")
    payload = _read_varint(buf, "payload size")
    ext_raw = take(take(1, "extension")[0], "extension")
    end = buf.tell()
    stored = int.from_bytes(take(4, "header checksum"), "little")
    if zlib.crc32(blob[:end]) != stored:
        raise FormatError("corrupt header (header checksum mismatch)")
    scheme, compute = flags & 0x0F, flags >> 4
    if scheme != SCHEME_EVAL_WINDOWS or compute >= 2 * len(WEIGHTS):
        raise FormatError(f"unknown windowing scheme {scheme} or compute {compute} in the header")
    try:
        ext = ext_raw.decode("utf-8")
    except UnicodeDecodeError:
        raise FormatError("corrupt header (extension is not UTF-8)") from None
    have = len(blob) - (end + 4)
    if have < payload:
        raise FormatError(f"truncated file ({have} of {payload} payload bytes)")
    if have > payload:
        raise FormatError(f"{have - payload} unexpected bytes after the compressed data")
    if payload % 4:
        raise FormatError(f"corrupt header (payload of {payload} bytes is not whole 32-bit words)")
    if n > MAX_LENGTH:
        raise FormatError(
            f"corrupt header (length {n} is over the {MAX_LENGTH:,}-byte maximum of a .bgz file)"
        )
    if (n + 1) > (8 * payload + 128) << 16:
        # Every symbol costs at least 2**-16 bits (each of the 257 symbols keeps >= 2**-24
        # of the probability), so n + 1 symbols cannot fit in fewer bits: a header that
        # claims so is not honest, and would only make the decoder run for nothing.
        raise FormatError(f"corrupt header (length {n} cannot fit in {payload} payload bytes)")
    name = next(k for k, v in COMPUTE.items() if v == compute % 2)
    return Header(fp, s, lmax, n, crc, payload, ext, scheme, name, WEIGHTS[compute // 2])


def _compute_code(device: str, weights: str) -> int:
    return 2 * WEIGHTS.index(weights) + COMPUTE[device]


# ----------------------------------------------------------------------------- the model run


@contextlib.contextmanager
def exact_compute(device: torch.device):
    """The settings both sides use: fp32 and no autocast; on CPU one thread (batch-1 steps gain
    nothing from more, and a fixed thread count keeps the order of every float reduction the
    same on machines with different core counts); on CUDA deterministic algorithms and no TF32.
    (The CPU kernels used here are deterministic already; switching deterministic mode on costs
    seconds of imports, so it is left alone there.)"""
    cuda = device.type == "cuda"
    prev = torch.are_deterministic_algorithms_enabled()
    prev_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    threads = torch.get_num_threads()
    if cuda:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    else:
        torch.set_num_threads(1)
    try:
        with torch.inference_mode(), torch.autocast(device.type, enabled=False):
            yield
    finally:
        if cuda:
            torch.use_deterministic_algorithms(prev, warn_only=prev_warn)
            torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
        else:
            torch.set_num_threads(threads)


def coded_symbols(n: int) -> int:
    """Symbols coded for a file of n bytes: the bytes and the end-of-file symbol."""
    return n + 1


def _run(
    model: BGPT,
    n: int,
    ext: str,
    step: Callable[[np.ndarray, torch.Tensor, int], int],
    progress: Callable[[int], None] | None = None,
) -> bytes:
    """The incremental computation shared by encoder and decoder.

    Walks the stream of an n-byte file with extension `ext` window by window
    (`stream.eval_windows`); for each coded position i (stream index S .. S+n) it computes the
    model's next-symbol logits, quantises them and calls `step(freq, logits, i)`, which returns the
    symbol at i (the encoder: the file's; the decoder: the one it decodes). Returns the n bytes
    coded before the end-of-file symbol.
    Per window: one prefill of its context patches, then one byte-decoder step per symbol and one
    patch-decoder step per completed patch, all batch 1."""
    c = model.config
    s, lmax = c.patch_size, c.max_patches
    pdec, bdec = model.patch_decoder, model.byte_decoder
    dev = next(model.parameters()).device
    num_patches = 2 + -(-n // s)  # header, data, end patch
    head = header_patch(ext, s)
    data = bytearray()  # the symbols coded so far after the header patch: grows as they come,
    # so memory follows the work done, whatever length a (forged) header claims

    def symbols(a: int, b: int) -> np.ndarray:
        """Stream symbols [a, b), all already coded: header patch, then data."""
        out = np.full(b - a, PAD, dtype=np.int64)
        for i in range(a, min(b, s)):
            out[i - a] = head[i]
        lo, hi = max(a, s), min(b, s + len(data))
        if hi > lo:
            out[lo - a : hi - a] = np.frombuffer(data, np.uint8, hi - lo, lo - s)
        return out

    last = s + n  # stream index of the end-of-file symbol, the last one coded
    done = 0
    for start, first in iter_eval_windows(num_patches, lmax):
        pcache = pdec.transformer.new_cache(1, lmax, dev, torch.float32)
        context = torch.from_numpy(symbols(start * s, first * s)).to(dev).view(1, -1, s)
        feature = pdec.transformer(pdec.embed(context), pcache)[:, -1]  # (1, H)
        stop = min(start + lmax, num_patches)
        for p in range(first, stop):
            bcache = bdec.transformer.new_cache(1, bdec.context + s, dev, torch.float32)
            bdec.prime(bcache, torch.from_numpy(symbols((p - 1) * s, p * s)).to(dev)[None])
            x = feature
            for j in range(s):
                i = p * s + j
                logits = bdec.logits(bdec.transformer(x[:, None], bcache)[:, 0])  # (1, 257)
                y = step(quantize(logits), logits, i)
                if i == last:
                    if progress:
                        progress(coded_symbols(n) - done)
                    return bytes(data)
                data.append(y)  # before the end of file every symbol is a byte (step checks)
                x = bdec.wte(torch.tensor([y], device=dev))  # (1, H)
            if p + 1 < stop:  # the window's last patch predicts nothing in it
                patch = torch.from_numpy(symbols(p * s, (p + 1) * s)).to(dev).view(1, 1, s)
                feature = pdec.transformer(pdec.embed(patch), pcache)[:, 0]  # (1, H)
            if progress:  # positions s .. (p+1)*s - 1 are coded
                progress(p * s - done)
                done = p * s
    raise AssertionError("the windows ended before the end-of-file symbol")  # pragma: no cover


# ----------------------------------------------------------------------------- codec


@dataclass(frozen=True)
class Compressed:
    """A compressed file and what it cost."""

    data: bytes
    """The .bgz bytes: header and payload."""
    header_bytes: int
    payload_bytes: int
    model_bits: float
    """-log2 p of every coded symbol under the model's float distributions (the BPB numerator)."""
    quantized_bits: float
    """The same under the integer frequencies the coder used."""


def _check_model(model) -> BGPT:
    if not isinstance(model, BGPT):
        kind = (
            "a classifier"
            if getattr(getattr(model, "config", None), "is_classifier", False)
            else type(model).__name__
        )
        raise BGPTError(f"compression needs a generative bGPT model; this one is {kind}")
    if any(p.dtype not in (torch.float32, torch.bfloat16) for p in model.parameters()):
        raise BGPTError("compression runs the model as loaded with --weights fp32, bf16 or int8")
    return model


def _clean_ext(ext: str) -> str:
    ext = ext[1:] if ext.startswith(".") else ext
    if len(ext.encode("utf-8")) > MAX_EXT_BYTES:
        raise BGPTError(f"extension {ext[:20]!r}... is longer than {MAX_EXT_BYTES} bytes")
    return ext


class Codec:
    """Compress and decompress with one model (its fingerprint computed once)."""

    def __init__(self, model: BGPT):
        self.model = _check_model(model)
        self.fingerprint = fingerprint(model)
        self.weights = weights_of(model)
        self.device = next(model.parameters()).device
        if self.device.type not in COMPUTE:
            raise BGPTError(f"compression runs on CPU or CUDA, not {self.device.type}")

    def _eval(self):
        was = self.model.training
        self.model.eval()  # dropout off
        return was

    def compress(
        self, data: bytes, ext: str = "", progress: Callable[[int], None] | None = None
    ) -> Compressed:
        """Compress `data`, a file with extension `ext` (its header patch). `progress(k)` is
        called as k more symbols are coded (n + 1 in all)."""
        constriction, family = _coder_model()
        ext = _clean_ext(ext)
        data = bytes(data)
        n = len(data)
        if n > MAX_LENGTH:
            raise BGPTError(f"{n:,} bytes is over the {MAX_LENGTH:,}-byte maximum of a .bgz file")
        stream_data = np.frombuffer(data, dtype=np.uint8)
        s = self.model.config.patch_size
        encoder = constriction.stream.queue.RangeEncoder()
        bits = [0.0, 0.0]

        def step(freq: np.ndarray, logits: torch.Tensor, i: int) -> int:
            y = int(stream_data[i - s]) if i - s < n else PAD
            encoder.encode(np.array([y], dtype=np.int32), family, _as_probabilities(freq))
            bits[0] -= float(logits.double().log_softmax(-1)[0, y]) / math.log(2)
            bits[1] -= math.log2(freq[y] / TOTAL)
            return y

        was = self._eval()
        try:
            with exact_compute(self.device):
                _run(self.model, n, ext, step, progress)
        finally:
            self.model.train(was)
        payload = encoder.get_compressed().astype("<u4").tobytes()
        c = self.model.config
        header = Header(
            self.fingerprint,
            c.patch_size,
            c.max_patches,
            n,
            zlib.crc32(data),
            len(payload),
            ext,
            compute=self.device.type,
            weights=self.weights,
        ).to_bytes()
        return Compressed(header + payload, len(header), len(payload), bits[0], bits[1])

    def check(self, blob: bytes) -> Header:
        """The header of a .bgz file, checked against this model and device (FormatError)."""
        h = read_header(blob)
        c = self.model.config
        if h.weights != self.weights:
            raise FormatError(
                f"compressed with --weights {h.weights}; decompress it with --weights {h.weights} "
                f"(this model's weights are {self.weights})"
            )
        if h.fingerprint != self.fingerprint:
            raise FormatError(
                f"compressed with a different model (fingerprint {h.fingerprint.hex()}; "
                f"this model's is {self.fingerprint.hex()})"
            )
        if (h.patch_size, h.max_patches) != (c.patch_size, c.max_patches):  # pragma: no cover
            raise FormatError("the header's patch windowing does not match the model")
        if h.compute != self.device.type:
            raise FormatError(
                f"compressed on {h.compute.upper()}; decompress it on {h.compute.upper()} "
                f"(the model's floats differ between CPU and GPU)"
            )
        return h

    def decompress(self, blob: bytes, progress: Callable[[int], None] | None = None) -> bytes:
        """The original bytes of a .bgz file; FormatError (one line) if it is not exactly that."""
        constriction, family = _coder_model()
        blob = bytes(blob)
        h = self.check(blob)
        c = self.model.config
        words = np.frombuffer(blob, dtype="<u4", offset=len(blob) - h.payload_bytes)
        decoder = constriction.stream.queue.RangeDecoder(words.astype(np.uint32))
        s, n = c.patch_size, h.length

        def step(freq: np.ndarray, logits: torch.Tensor, i: int) -> int:
            try:
                y = int(decoder.decode(family, _as_probabilities(freq))[0])
            except Exception as e:  # the coder refusing its input is corruption, whatever type
                raise FormatError(f"corrupt data ({e})") from None
            if y == PAD and i < s + n:
                raise FormatError(f"corrupt data (it ends after {i - s} of {n} bytes)")
            if y != PAD and i == s + n:
                raise FormatError(f"corrupt data (it does not end after {n} bytes)")
            return y

        was = self._eval()
        try:
            with exact_compute(self.device):
                data = _run(self.model, n, h.ext, step, progress)
        finally:
            self.model.train(was)
        if zlib.crc32(data) != h.crc32:
            raise FormatError(
                "checksum mismatch: corrupt data, or compressed on another platform "
                "(torch build or hardware) whose floats differ"
            )
        return data


def compress(model: BGPT, data: bytes, ext: str = "") -> bytes:
    """The .bgz bytes of `data` (a file with extension `ext`) under `model`."""
    return Codec(model).compress(data, ext).data


def decompress(model: BGPT, blob: bytes) -> bytes:
    """The original bytes of a .bgz file compressed with `model`."""
    return Codec(model).decompress(blob)


__all__ = [
    "Codec",
    "Compressed",
    "FormatError",
    "Header",
    "PRECISION",
    "SUFFIX",
    "compress",
    "decompress",
    "fingerprint",
    "quantize",
    "read_header",
]
