#!/usr/bin/env python3
"""Independent reference for Protocol/secrets.md: derives the key chain and text forms with
Python's `cryptography` package and writes Tests/SyncSecurityTests/Vectors/secrets.json, which the
Swift tests check byte for byte. Run: pip install cryptography && python3 Protocol/tools/secrets_vectors.py
"""
import base64, hashlib, json, pathlib, struct
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives import serialization

def hkdf(key, label, n):
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=label.encode()).derive(key)

def b32(b):
    return base64.b32encode(b).decode().rstrip("=").lower()

PREFIX = {"rw": "syncd-rw-", "ro": "syncd-ro-", "st": "syncd-st-"}

def text(kind, secret, pub):
    payload = bytes([1]) + secret + (b"" if kind == "rw" else pub)
    check = hashlib.sha256(PREFIX[kind].encode() + payload).digest()[:4]
    return PREFIX[kind] + b32(payload + check)

def vector(w):
    seed = hkdf(w, "syncd v1 folder signing key", 32)
    pub = Ed25519PrivateKey.from_private_bytes(seed).public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    r = hkdf(w, "syncd v1 read-only", 32)
    s = hkdf(r, "syncd v1 storage", 32)
    gear_bytes = hkdf(r, "syncd v1 chunker gear", 2048)
    gear = [struct.unpack_from("<Q", gear_bytes, 8 * i)[0] for i in range(256)]
    return {
        "w": w.hex(), "signingSeed": seed.hex(), "folderPublicKey": pub.hex(),
        "r": r.hex(), "s": s.hex(),
        "rwText": text("rw", w, pub), "roText": text("ro", r, pub), "stText": text("st", s, pub),
        "folderID": hashlib.sha256(b"syncd v1 folder id" + s + pub).hexdigest(),
        "sessionPSK": hkdf(s, "syncd v1 session psk", 32).hex(),
        "chunkIDKey": hkdf(r, "syncd v1 chunk id", 32).hex(),
        "manifestKey": hkdf(r, "syncd v1 manifest", 32).hex(),
        "chunkKey": hkdf(r, "syncd v1 chunk", 32).hex(),
        "gearFirst4": [f"{g:016x}" for g in gear[:4]], "gearLast": f"{gear[255]:016x}",
        "gearSHA256": hashlib.sha256(gear_bytes).hexdigest(),
    }

vectors = [vector(bytes(32)), vector(bytes(range(32))), vector(hashlib.sha256(b"syncd test vector 3").digest())]
out = pathlib.Path(__file__).resolve().parents[2] / "Tests/SyncSecurityTests/Vectors/secrets.json"
out.write_text(json.dumps({"source": "Protocol/tools/secrets_vectors.py (Python cryptography, independent of the Swift code)",
                           "vectors": vectors}, indent=2) + "\n")
print(json.dumps(vectors[1], indent=2))
