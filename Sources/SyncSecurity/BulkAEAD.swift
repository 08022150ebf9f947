import CSyncCrypto
import Crypto
import Foundation

/// AES-256-GCM (NIST SP 800-38D; 12-byte nonce, 16-byte tag appended) for bulk data: transport
/// frames, sealed manifests and chunks. Two implementations produce the same bytes — system
/// OpenSSL's EVP and swift-crypto's BoringSSL — and which is faster depends on the CPU (on this
/// project's test machine, with VAES/AVX-512, BoringSSL is about twice OpenSSL 3.0's speed; on
/// the machine DESIGN.md measured, OpenSSL was three times faster: Benchmarks/RESULTS.md). So
/// each process times both once (`preferred`) and uses the faster. The key schedule is prepared
/// once per instance. Not thread-safe: one instance per direction per session, as Noise cipher
/// states are.
public final class BulkAEAD {
    public static let tagSize = 16

    public enum Implementation: String, CaseIterable, Sendable {
        case openssl = "openssl"
        case swiftCrypto = "swift-crypto"
    }

    /// The faster implementation on this CPU, timed once per process at first use (a few
    /// milliseconds: 64 KiB messages sealed and opened for about 2 ms each, best of three);
    /// `SYNCD_AEAD=openssl|swift-crypto` overrides it.
    public static let preferred: Implementation = {
        if let forced = ProcessInfo.processInfo.environment["SYNCD_AEAD"].flatMap(Implementation.init(rawValue:)) { return forced }
        let rates = Dictionary(uniqueKeysWithValues: Implementation.allCases.map { ($0, throughput($0)) })
        return rates[.swiftCrypto]! > rates[.openssl]! ? .swiftCrypto : .openssl
    }()

    /// Bytes of plaintext sealed and opened per second by `implementation`, over 64 KiB messages.
    public static func throughput(_ implementation: Implementation, messages: Int = 32) -> Double {
        let aead = BulkAEAD(key: [UInt8](repeating: 0x5a, count: 32), implementation: implementation)
        let plain = [UInt8](repeating: 0xa5, count: 64 << 10)
        var best = Double.infinity
        for _ in 0..<3 {
            let start = DispatchTime.now().uptimeNanoseconds
            for i in 0..<messages {
                let nonce = noiseNonce(UInt64(i))
                let sealed = aead.seal(nonce: nonce, plaintext: plain)
                _ = try? aead.open(nonce: nonce, ciphertext: sealed)
            }
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9)
        }
        return Double(plain.count * messages) / max(best, 1e-9)
    }

    public let implementation: Implementation
    private let sealer: UnsafeMutablePointer<csync_gcm>
    private let opener: UnsafeMutablePointer<csync_gcm>
    private let key: SymmetricKey

    public struct AuthenticationFailure: Error, Equatable {}

    public init(key: [UInt8], implementation: Implementation = BulkAEAD.preferred) {
        precondition(key.count == 32, "AES-256-GCM takes a 32-byte key")
        self.implementation = implementation
        self.key = SymmetricKey(data: key)
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
        if implementation == .swiftCrypto {
            let box = try! AES.GCM.seal(plaintext, using: key, nonce: AES.GCM.Nonce(data: nonce), authenticating: ad)
            _ = box.ciphertext.copyBytes(to: out)
            _ = box.tag.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: out[plaintext.count...]))
            return
        }
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
        if implementation == .swiftCrypto {
            guard let n = try? AES.GCM.Nonce(data: nonce),
                  let box = try? AES.GCM.SealedBox(nonce: n, ciphertext: UnsafeRawBufferPointer(rebasing: ciphertext[..<len]),
                                                   tag: UnsafeRawBufferPointer(rebasing: ciphertext[len...])),
                  let plain = try? AES.GCM.open(box, using: key, authenticating: ad) else { throw AuthenticationFailure() }
            _ = plain.copyBytes(to: out)
            return
        }
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
