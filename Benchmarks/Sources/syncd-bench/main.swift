import Crypto
import Dispatch
import Foundation
import SyncCore
import SyncFS
import SyncSecurity
import SyncWire

// Micro-benchmarks of the hot paths. Each prints one JSON line; figures are the best of N runs
// (the machine is shared, so the best run is the least disturbed one).

func now() -> Double { Double(DispatchTime.now().uptimeNanoseconds) / 1e9 }

func best(_ runs: Int, _ body: () -> Void) -> Double {
    var b = Double.infinity
    for _ in 0..<runs {
        let t = now()
        body()
        b = min(b, now() - t)
    }
    return b
}

func report(_ name: String, _ fields: [String: Any]) {
    var f = fields
    f["bench"] = name
    let data = try! JSONSerialization.data(withJSONObject: f, options: [.sortedKeys])
    print(String(decoding: data, as: UTF8.self))
}

func randomBytes(_ n: Int, seed: UInt64 = 42) -> [UInt8] {
    var out = [UInt8](repeating: 0, count: n)
    var x = seed
    out.withUnsafeMutableBytes { raw in
        let words = raw.bindMemory(to: UInt64.self)
        for i in 0..<words.count {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            words[i] = z ^ (z >> 31)
        }
    }
    return out
}

let gb = 1e9
let size = 512 << 20
let data = randomBytes(size)
let cdc = FastCDC(gear: FastCDC.testGear(seed: 7))
let key = [UInt8](repeating: 1, count: 32)

func chunker() {
    var chunks = 0
    let t = best(5) {
        chunks = 0
        data.withUnsafeBytes { buf in
            var at = 0
            while at < buf.count {
                let n = cdc.cut(UnsafeRawBufferPointer(rebasing: buf[at...]), isFinal: true)
                at += n
                chunks += 1
            }
        }
    }
    report("fastcdc", ["bytes": size, "seconds": t, "GBps": Double(size) / t / gb, "chunks": chunks,
                       "avgChunk": size / max(chunks, 1)])
}

func hmacs() {
    let ossl = ChunkHasher(key: key)
    let piece = 64 << 10
    let n = size / piece
    let t1 = best(3) {
        data.withUnsafeBytes { buf in
            for i in 0..<n { _ = ossl.chunkID(UnsafeRawBufferPointer(rebasing: buf[i * piece..<(i + 1) * piece])) }
        }
    }
    let sk = SymmetricKey(data: key)
    let t2 = best(3) {
        data.withUnsafeBytes { buf in
            for i in 0..<n { _ = HMAC<SHA256>.authenticationCode(for: UnsafeRawBufferPointer(rebasing: buf[i * piece..<(i + 1) * piece]), using: sk) }
        }
    }
    report("hmac-sha256-64KiB", ["opensslGBps": Double(size) / t1 / gb, "swiftCryptoGBps": Double(size) / t2 / gb])
}

/// Chunking + keyed ids of a large file read from disk (page cache), pipelined across cores.
func fileHash() throws {
    let path = NSTemporaryDirectory() + "syncd-bench-large.bin"
    FileManager.default.createFile(atPath: path, contents: Data(data))
    defer { unlink(path) }
    let dir = (path as NSString).deletingLastPathComponent
    let fs = POSIXFileSystem(root: dir)
    let hasher = FileHasher(chunker: cdc, ids: ChunkHasher(key: key))
    let name = (path as NSString).lastPathComponent
    var chunks = 0
    let t = best(5) {
        let r = try! fs.openForReading(name)
        chunks = try! hasher.hash(r, expectedSize: Int64(size)).chunks.count
        r.close()
    }
    report("file-chunk+id", ["bytes": size, "seconds": t, "GBps": Double(size) / t / gb, "chunks": chunks,
                             "cores": ProcessInfo.processInfo.activeProcessorCount])
}

/// Transport-style AEAD: seal then open 64 KiB frames, one core.
func aead() throws {
    let piece = 64 << 10
    let n = 2048  // 128 MiB per pass
    let plain = Array(data.prefix(piece))
    let ossl = BulkAEAD(key: key)
    var sealed = [UInt8](repeating: 0, count: piece + 16)
    var opened = [UInt8](repeating: 0, count: piece)
    let t1 = best(3) {
        plain.withUnsafeBytes { p in
            sealed.withUnsafeMutableBytes { s in
                opened.withUnsafeMutableBytes { o in
                    for i in 0..<n {
                        let nonce = BulkAEAD.noiseNonce(UInt64(i))
                        ossl.seal(nonce: nonce, ad: UnsafeRawBufferPointer(start: nil, count: 0), plaintext: p, into: s)
                        try! ossl.open(nonce: nonce, ad: UnsafeRawBufferPointer(start: nil, count: 0), ciphertext: UnsafeRawBufferPointer(s), into: o)
                    }
                }
            }
        }
    }
    let sk = SymmetricKey(data: key)
    let t2 = best(3) {
        for i in 0..<n {
            let nonce = try! AES.GCM.Nonce(data: BulkAEAD.noiseNonce(UInt64(i)))
            let box = try! AES.GCM.seal(plain, using: sk, nonce: nonce)
            _ = try! AES.GCM.open(box, using: sk)
        }
    }
    let bytes = Double(piece * n)
    report("aes256gcm-seal+open-64KiB", ["opensslGBps": bytes / t1 / gb, "swiftCryptoGBps": bytes / t2 / gb,
                                         "note": "GB of plaintext sealed and opened per second, one core"])
}

/// Sealed manifests: seal (encode + AES-GCM + Ed25519 sign) and verify + open (decode + signature
/// check + decrypt + entry decode) batches of 1,000 typical entries (2 chunks each), one core.
func manifests() throws {
    let secret = FolderSecret.generate()
    let k = secret.keys
    let keys = ManifestKeys(folderID: k.folderID, publicKey: try Curve25519.Signing.PublicKey(rawRepresentation: k.folderPublicKey),
                            manifestKey: k.manifestKey, signingKey: k.signingKey)
    let batch = (0..<1000).map { i in
        FileEntry(path: "wiki/uploads/\(i / 100)/image-\(i).png",
                  metadata: FileMetadata(kind: .file, size: 100_000, mode: 0o644, mtimeNs: 1_700_000_000_000_000_000, ctimeNs: 0, inode: 0),
                  version: VersionVector().incremented(by: 7), sequence: Int64(i + 1),
                  chunks: [ChunkRef(id: ChunkID(w0: UInt64(i), w1: 2, w2: 3, w3: 4), size: 65536),
                           ChunkRef(id: ChunkID(w0: UInt64(i), w1: 5, w2: 6, w3: 7), size: 34464)])
    }
    let rounds = 50
    var wire: [[UInt8]] = []
    let t1 = best(3) { wire = (0..<rounds).map { _ in try! SealedManifest.seal(batch, origin: 1, indexID: 1, keys: keys).encoded } }
    let t2 = best(3) {
        for bytes in wire {
            let m = try! SealedManifest(decoding: bytes)
            try! m.verify(keys: keys)
            precondition(try! m.open(keys: keys).count == batch.count)
        }
    }
    let entries = Double(rounds * batch.count)
    report("manifest-1000-entries", ["sealEntriesPerSec": entries / t1, "verifyOpenEntriesPerSec": entries / t2,
                                     "bytesPerEntry": wire[0].count / batch.count])
}

/// Complete Noise_XXpsk3 handshakes (both sides' work, one core): 3 messages, 5 X25519 operations
/// and 2 key generations per side — what a daemon pays per new session.
func handshakes() throws {
    let psk = [UInt8](repeating: 3, count: 32)
    let a = Curve25519.KeyAgreement.PrivateKey(), b = Curve25519.KeyAgreement.PrivateKey()
    let n = 2000
    let t = best(3) {
        for _ in 0..<n {
            var i = NoiseHandshake(role: .initiator, prologue: [1], psk: psk, staticKey: a)
            var r = NoiseHandshake(role: .responder, prologue: [1], psk: psk, staticKey: b)
            _ = try! r.readMessage(try! i.writeMessage(payload: []))
            _ = try! i.readMessage(try! r.writeMessage(payload: []))
            _ = try! r.readMessage(try! i.writeMessage(payload: []))
            precondition(i.isComplete && r.isComplete)
        }
    }
    report("noise-xxpsk3-handshake", ["handshakesPerSec": Double(n) / t, "note": "initiator + responder work, one core"])
}

let which = CommandLine.arguments.dropFirst().first ?? "all"
if which == "all" || which == "chunker" { chunker() }
if which == "all" || which == "hmac" { hmacs() }
if which == "all" || which == "file" { try fileHash() }
if which == "all" || which == "aead" { try aead() }
if which == "all" || which == "manifest" { try manifests() }
if which == "all" || which == "handshake" { try handshakes() }
