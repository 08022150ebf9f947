import CSyncCrypto

/// AES-256-GCM over system OpenSSL for bulk data (transport frames, sealed chunks): about three
/// times swift-crypto's throughput here (Benchmarks/RESULTS.md). The key schedule is prepared once.
/// Not thread-safe: one instance per direction per session, as Noise cipher states are.
public final class BulkAEAD {
    public static let tagSize = 16
    private let sealer: UnsafeMutablePointer<csync_gcm>
    private let opener: UnsafeMutablePointer<csync_gcm>

    public struct AuthenticationFailure: Error, Equatable {}

    public init(key: [UInt8]) {
        precondition(key.count == 32, "AES-256-GCM takes a 32-byte key")
        sealer = .allocate(capacity: 1)
        opener = .allocate(capacity: 1)
        sealer.initialize(to: csync_gcm())
        opener.initialize(to: csync_gcm())
        let ok = key.withUnsafeBufferPointer { k in
            csync_gcm_init(sealer, k.baseAddress, 1) == 1 && csync_gcm_init(opener, k.baseAddress, 0) == 1
        }
        precondition(ok, "OpenSSL could not set up AES-256-GCM")
    }

    deinit {
        csync_gcm_free(sealer)
        csync_gcm_free(opener)
        sealer.deallocate()
        opener.deallocate()
    }

    /// Noise's nonce encoding: 4 zero bytes then the 64-bit counter, big-endian.
    public static func noiseNonce(_ counter: UInt64) -> [UInt8] {
        var n = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { n[4 + i] = UInt8(truncatingIfNeeded: counter >> (56 - 8 * UInt64(i))) }
        return n
    }

    /// Writes ciphertext || tag (plaintext.count + 16 bytes) to `out`.
    public func seal(nonce: [UInt8], ad: UnsafeRawBufferPointer, plaintext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        precondition(nonce.count == 12 && out.count >= plaintext.count + Self.tagSize)
        let ok = nonce.withUnsafeBufferPointer { n in
            csync_gcm_seal(sealer, n.baseAddress, ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                           plaintext.baseAddress?.assumingMemoryBound(to: UInt8.self), plaintext.count,
                           out.baseAddress!.assumingMemoryBound(to: UInt8.self))
        }
        precondition(ok == 1, "OpenSSL AES-GCM seal failed")
    }

    /// Verifies and decrypts ciphertext || tag into `out` (ciphertext.count - 16 bytes).
    public func open(nonce: [UInt8], ad: UnsafeRawBufferPointer, ciphertext: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws {
        guard nonce.count == 12, ciphertext.count >= Self.tagSize, out.count >= ciphertext.count - Self.tagSize else {
            throw AuthenticationFailure()
        }
        let len = ciphertext.count - Self.tagSize
        // An empty message still needs a valid output pointer for OpenSSL.
        let ok = withUnsafeTemporaryAllocation(byteCount: 1, alignment: 1) { spare in
            let target = (out.baseAddress ?? spare.baseAddress!).assumingMemoryBound(to: UInt8.self)
            return nonce.withUnsafeBufferPointer { n in
                csync_gcm_open(opener, n.baseAddress, ad.baseAddress?.assumingMemoryBound(to: UInt8.self), ad.count,
                               ciphertext.baseAddress!.assumingMemoryBound(to: UInt8.self), len, target)
            }
        }
        guard ok == 1 else { throw AuthenticationFailure() }
    }

    public func seal(nonce: [UInt8], ad: [UInt8] = [], plaintext: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: plaintext.count + Self.tagSize)
        ad.withUnsafeBytes { a in plaintext.withUnsafeBytes { p in out.withUnsafeMutableBytes { seal(nonce: nonce, ad: a, plaintext: p, into: $0) } } }
        return out
    }

    public func open(nonce: [UInt8], ad: [UInt8] = [], ciphertext: [UInt8]) throws -> [UInt8] {
        guard ciphertext.count >= Self.tagSize else { throw AuthenticationFailure() }
        var out = [UInt8](repeating: 0, count: ciphertext.count - Self.tagSize)
        try ad.withUnsafeBytes { a in try ciphertext.withUnsafeBytes { c in try out.withUnsafeMutableBytes { try open(nonce: nonce, ad: a, ciphertext: c, into: $0) } } }
        return out
    }
}
