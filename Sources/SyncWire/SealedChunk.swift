@preconcurrency import Crypto
import SyncCore
import SyncSecurity

/// A chunk as storage peers hold it (Protocol/chunks.md): padded so its exact size does not leak,
/// encrypted under a key only R holders can derive, and signed by the folder key so a storage
/// peer can check what it stores and serves without reading a byte of it.
public struct SealedChunk: Sendable, Equatable {
    public static let magic: [UInt8] = Array("SYC1".utf8)

    public let id: ChunkID
    public let ciphertext: [UInt8]     // AES-256-GCM of the padded plaintext, tag included
    public let signature: [UInt8]      // 64

    public enum Failure: Error, Equatable, CustomStringConvertible {
        case cannotSeal, cannotOpen, badSignature, decryptFailed, wrongContent
        public var description: String {
            switch self {
            case .cannotSeal: return "sealing chunks needs the read-write secret"
            case .cannotOpen: return "a storage secret cannot open chunks"
            case .badSignature: return "sealed chunk is not signed by the folder key"
            case .decryptFailed: return "sealed chunk does not decrypt"
            case .wrongContent: return "chunk content does not match its id"
            }
        }
    }

    /// Padmé (Nikitin et al., PETS 2019): rounds up so that at most O(log log L) bits of the
    /// length leak, with at most 12 % overhead.
    public static func padme(_ length: Int) -> Int {
        guard length > 2 else { return length }
        let e = Int.bitWidth - 1 - length.leadingZeroBitCount          // floor(log2 L)
        let s = Int.bitWidth - (e).leadingZeroBitCount                  // floor(log2 E) + 1
        let mask = (1 << (e - s)) - 1
        return (length + mask) & ~mask
    }

    /// The per-chunk key: HKDF-SHA256(chunkKey, info = "syncd v1 chunk key" || id).
    public static func key(chunkKey: [UInt8], id: ChunkID) -> [UInt8] {
        let info = Array("syncd v1 chunk key".utf8) + id.bytes
        return HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: chunkKey), info: info, outputByteCount: 32)
            .withUnsafeBytes { Array($0) }
    }

    public static func seal(_ data: [UInt8], id: ChunkID, chunkKey: [UInt8], signer: Curve25519.Signing.PrivateKey) throws(Failure) -> SealedChunk {
        var plain = [UInt8](repeating: 0, count: padme(4 + data.count))
        let n = UInt32(data.count)
        plain[0] = UInt8(n >> 24); plain[1] = UInt8(truncatingIfNeeded: n >> 16)
        plain[2] = UInt8(truncatingIfNeeded: n >> 8); plain[3] = UInt8(truncatingIfNeeded: n)
        plain.replaceSubrange(4..<4 + data.count, with: data)
        // A zero nonce is safe: the key is unique to the chunk id, and one id is one plaintext.
        let ct = BulkAEAD(key: key(chunkKey: chunkKey, id: id)).seal(nonce: [UInt8](repeating: 0, count: 12), ad: magic + id.bytes, plaintext: plain)
        guard let sig = try? signer.signature(for: signedBytes(id, ct)) else { throw .cannotSeal }
        return SealedChunk(id: id, ciphertext: ct, signature: Array(sig))
    }

    /// What a storage peer checks before storing or serving.
    public func verify(folderKey: Curve25519.Signing.PublicKey) throws(Failure) {
        guard folderKey.isValidSignature(signature, for: Self.signedBytes(id, ciphertext)) else { throw .badSignature }
    }

    /// Verifies, decrypts, unpads and checks the content against its keyed id.
    public func open(chunkKey: [UInt8], ids: ChunkHasher, folderKey: Curve25519.Signing.PublicKey) throws(Failure) -> [UInt8] {
        try verify(folderKey: folderKey)
        let plain: [UInt8]
        do {
            plain = try BulkAEAD(key: Self.key(chunkKey: chunkKey, id: id)).open(nonce: [UInt8](repeating: 0, count: 12), ad: Self.magic + id.bytes, ciphertext: ciphertext)
        } catch { throw .decryptFailed }
        guard plain.count >= 4 else { throw .decryptFailed }
        let n = Int(plain[0]) << 24 | Int(plain[1]) << 16 | Int(plain[2]) << 8 | Int(plain[3])
        guard n <= plain.count - 4 else { throw .decryptFailed }
        let data = Array(plain[4..<4 + n])
        guard ids.chunkID(data) == id else { throw .wrongContent }
        return data
    }

    static func signedBytes(_ id: ChunkID, _ ciphertext: [UInt8]) -> [UInt8] {
        magic + id.bytes + Array(SHA256.hash(data: ciphertext))
    }

    // MARK: wire form: "SYC1" id[32] length:u32 ciphertext signature[64]

    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: 104 + ciphertext.count)
        w.raw(Self.magic)
        w.raw(id.bytes)
        w.u32(UInt32(ciphertext.count))
        w.raw(ciphertext)
        w.raw(signature)
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        guard Array(try r.take(4)) == Self.magic else { throw .malformed("not a sealed chunk") }
        id = try r.take(32).withUnsafeBytes { ChunkID($0) }
        let n = Int(try r.u32())
        guard n >= BulkAEAD.tagSize + 4, n <= (1 << 20) else { throw .malformed("sealed chunk length \(n)") }
        ciphertext = Array(try r.take(n))
        signature = Array(try r.take(64))
        try r.expectEnd()
    }

    init(id: ChunkID, ciphertext: [UInt8], signature: [UInt8]) {
        self.id = id; self.ciphertext = ciphertext; self.signature = signature
    }
}
