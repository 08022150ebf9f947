#!/usr/bin/env python3
"""Independent reference for Protocol/wire.md and manifest.md: builds a transport frame, a sealed
chunk and a sealed manifest and a chunk list cut into pieces with Python's `cryptography` package and writes
Tests/SyncWireTests/Vectors/wire.json, which the Swift tests check byte for byte.
Keys come from the second secrets vector (W = 00 01 .. 1f). Run:
    pip install cryptography && python3 Protocol/tools/wire_vectors.py
"""
import hashlib, hmac, json, pathlib, struct
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

def hkdf(key, info, n=32):
    return HKDF(algorithm=hashes.SHA256(), length=n, salt=None, info=info).derive(key)

W = bytes(range(32))
R = hkdf(W, b"syncd v1 read-only")
S = hkdf(R, b"syncd v1 storage")
signer = Ed25519PrivateKey.from_private_bytes(hkdf(W, b"syncd v1 folder signing key"))
pub = signer.public_key().public_bytes_raw()
folder_id = hashlib.sha256(b"syncd v1 folder id" + S + pub).digest()
chunk_id_key, manifest_key, chunk_key = (hkdf(R, l) for l in (b"syncd v1 chunk id", b"syncd v1 manifest", b"syncd v1 chunk"))

def u16(n): return struct.pack(">H", n)
def u32(n): return struct.pack(">I", n)
def u64(n): return struct.pack(">Q", n)
def s(text): b = text.encode(); return u16(len(b)) + b

# 1. A transport frame: ping(1) under key 42*32, counter 0.
ping = b"\x02" + u64(1)
transport_key = bytes([0x42]) * 32
frame_body = AESGCM(transport_key).encrypt(bytes(12), ping, None)
frame = u32(len(frame_body)) + frame_body

# 2. A sealed chunk: Padmé-padded (u32 length || data), AES-GCM under HKDF(chunk key, label || id), zero nonce.
def padme(L):
    if L <= 2: return L
    e = L.bit_length() - 1
    s_ = e.bit_length()
    mask = (1 << (e - s_)) - 1
    return (L + mask) & ~mask
content = b"syncd sealed chunk vector " * 4
cid = hmac.new(chunk_id_key, content, hashlib.sha256).digest()
plain = u32(len(content)) + content
plain += bytes(padme(len(plain)) - len(plain))
per_chunk = hkdf(chunk_key, b"syncd v1 chunk key" + cid)
ct = AESGCM(per_chunk).encrypt(bytes(12), plain, b"SYC1" + cid)
sig = signer.sign(b"SYC1" + cid + hashlib.sha256(ct).digest())
sealed_chunk = b"SYC1" + cid + u32(len(ct)) + ct + sig

# 3. A sealed manifest with one entry and a fixed nonce.
entry = (s("docs/readme.txt") + b"\x00" + b"\x00" + u64(len(content)) + u32(0o644) + u64(1_700_000_000_123_456_789)
         + s("") + u16(1) + u64(0x0102030405060708) + u64(5) + u64(3) + b"\x01" + u32(1) + cid + u32(len(content)))
entries = u32(1) + entry
header = b"SYM1" + folder_id + u64(7) + u64(99) + u64(3) + u64(3)
nonce = bytes(range(12))
mct = AESGCM(manifest_key).encrypt(nonce, entries, header)
msig = signer.sign(header + nonce + u32(len(mct)) + mct)
manifest = header + nonce + u32(len(mct)) + mct + msig

# 4. A chunk list sent as pieces: 300 chunks ("chunk 0".."chunk 299", sizes 1000+i); a piece ends
#    after a chunk whose id starts with a byte below 4, or after 256 chunks; a piece's id is the
#    keyed id of its bytes (id || size:u32 per chunk); the entry's count has bit 31 set.
chunks = [(hmac.new(chunk_id_key, b"chunk %d" % i, hashlib.sha256).digest(), 1000 + i) for i in range(300)]
pieces, run = [], []
for i, (c, n) in enumerate(chunks):
    run.append(c + u32(n))
    if c[0] < 4 or len(run) == 256 or i == len(chunks) - 1:
        body = b"".join(run)
        pieces.append((hmac.new(chunk_id_key, body, hashlib.sha256).digest(), len(run), body)); run = []
pentry = (s("db.bin") + b"\x00" + b"\x00" + u64(sum(n for _, n in chunks)) + u32(0o600) + u64(5) + s("")
          + u16(1) + u64(9) + u64(1) + u64(4) + b"\x01" + u32(0x80000000 | len(pieces))
          + b"".join(pid + u32(count) for pid, count, _ in pieces))
pieces_entries = u32(1) + pentry

out = pathlib.Path(__file__).resolve().parents[2] / "Tests/SyncWireTests/Vectors/wire.json"
out.parent.mkdir(parents=True, exist_ok=True)
out.write_text(json.dumps({
    "source": "Protocol/tools/wire_vectors.py (Python cryptography, independent of the Swift code)",
    "w": W.hex(), "transportKey": transport_key.hex(), "pingFrame": frame.hex(),
    "chunkContent": content.hex(), "chunkID": cid.hex(), "sealedChunk": sealed_chunk.hex(),
    "manifestNonce": nonce.hex(), "manifestEntries": entries.hex(), "sealedManifest": manifest.hex(),
    "pieces": [{"id": pid.hex(), "count": count, "bytes": body.hex()} for pid, count, body in pieces],
    "piecesEntries": pieces_entries.hex(),
}, indent=1) + "\n")
print(frame.hex()); print(len(sealed_chunk), len(manifest))
