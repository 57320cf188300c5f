"""Ed25519 public keys and signature checks through the system's OpenSSL (pure).

`gifee run` checks an image's signature before every start. The `cryptography`
package does the same check, but importing it loads a 14 MB extension module with
its own copy of OpenSSL: more time than the check and all the rest of gifee's work
before the pod starts. Python's hashlib has already loaded the system's libcrypto,
so reaching Ed25519 there through ctypes costs next to nothing. Where libcrypto
cannot be used, `verify` answers None and the caller asks `cryptography` instead:
the same answer, only slower. Likewise `raw_public_key` knows only the one DER
form an Ed25519 SubjectPublicKeyInfo has; anything else goes to `cryptography`.

Theory of operation: bytes in, bytes or booleans out; no policy (signing.py and
trust.py decide what is signed and which keys count).
"""

from __future__ import annotations

import base64
import binascii
import ctypes

KEY_SIZE = 32
SIGNATURE_SIZE = 64
# The DER of an Ed25519 SubjectPublicKeyInfo up to the key (RFC 8410): there is no other encoding.
SPKI_PREFIX = bytes.fromhex("302a300506032b6570032100")
_PEM_BEGIN = b"-----BEGIN PUBLIC KEY-----"
_PEM_END = b"-----END PUBLIC KEY-----"
_EVP_PKEY_ED25519 = 1087  # OpenSSL's NID_ED25519


def raw_public_key(pem: bytes) -> bytes | None:
    """The 32-byte key of a PEM Ed25519 public key (one SubjectPublicKeyInfo block, its
    only DER form), or None for anything else."""
    text = pem.strip()
    if not (text.startswith(_PEM_BEGIN) and text.endswith(_PEM_END)):
        return None
    body = b"".join(text[len(_PEM_BEGIN):-len(_PEM_END)].split())
    try:
        der = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return None
    if len(der) != len(SPKI_PREFIX) + KEY_SIZE or not der.startswith(SPKI_PREFIX):
        return None
    return der[len(SPKI_PREFIX):]


class _LibCrypto:
    """The few libcrypto (OpenSSL 1.1.1 or 3) functions a one-shot Ed25519 check needs."""

    def __init__(self, lib: ctypes.CDLL) -> None:
        vp, size = ctypes.c_void_p, ctypes.c_size_t
        self.new_key = lib.EVP_PKEY_new_raw_public_key
        self.new_key.argtypes, self.new_key.restype = [ctypes.c_int, vp, ctypes.c_char_p, size], vp
        self.free_key = lib.EVP_PKEY_free
        self.free_key.argtypes, self.free_key.restype = [vp], None
        self.new_ctx = lib.EVP_MD_CTX_new
        self.new_ctx.argtypes, self.new_ctx.restype = [], vp
        self.free_ctx = lib.EVP_MD_CTX_free
        self.free_ctx.argtypes, self.free_ctx.restype = [vp], None
        self.verify_init = lib.EVP_DigestVerifyInit
        self.verify_init.argtypes, self.verify_init.restype = [vp, vp, vp, vp, vp], ctypes.c_int
        self.verify = lib.EVP_DigestVerify
        self.verify.argtypes, self.verify.restype = [vp, ctypes.c_char_p, size, ctypes.c_char_p, size], ctypes.c_int
        # A failed check leaves errors on the thread's OpenSSL error queue, which Python's
        # hashlib and ssl share: clear them so they are not reported for something else.
        self.clear_errors = lib.ERR_clear_error
        self.clear_errors.argtypes, self.clear_errors.restype = [], None


_lib: _LibCrypto | None = None
_lib_tried = False


def _libcrypto() -> _LibCrypto | None:
    global _lib, _lib_tried
    if not _lib_tried:
        _lib_tried = True
        for name in ("libcrypto.so.3", "libcrypto.so.1.1"):
            try:
                _lib = _LibCrypto(ctypes.CDLL(name))
                break
            except (OSError, AttributeError):  # not there, or too old to have these functions
                continue
    return _lib


def verify(key: bytes, message: bytes, signature: bytes) -> bool | None:
    """Whether `signature` is the Ed25519 signature of `message` by `key` (32 raw bytes);
    None if libcrypto is not usable here (the caller must then check another way)."""
    lib = _libcrypto()
    if lib is None:
        return None
    if len(key) != KEY_SIZE or len(signature) != SIGNATURE_SIZE:
        return False
    pkey = lib.new_key(_EVP_PKEY_ED25519, None, key, KEY_SIZE)
    if not pkey:
        lib.clear_errors()
        return None  # an OpenSSL built without Ed25519
    ctx = lib.new_ctx()
    try:
        if not ctx or lib.verify_init(ctx, None, None, None, pkey) != 1:
            lib.clear_errors()
            return None
        valid: bool = lib.verify(ctx, signature, len(signature), message, len(message)) == 1
        if not valid:
            lib.clear_errors()
        return valid
    finally:
        lib.free_ctx(ctx)
        lib.free_key(pkey)
