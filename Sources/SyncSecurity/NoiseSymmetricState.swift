@preconcurrency import Crypto

/// Why a Noise step failed. Every failure of a handshake is final: the handshake is dead afterwards.
public enum NoiseError: Error, Sendable, Equatable, CustomStringConvertible {
    /// An AEAD tag did not verify: wrong PSK, wrong prologue, wrong key, or tampered bytes.
    case authenticationFailed
    /// The bytes cannot be a message of this protocol (too short, too long, an unusable key).
    case malformed(String)
    /// A call out of turn: reading when it is our turn to write, after completion, or after a failure.
    case wrongState
    /// The 64-bit nonce counter reached its reserved last value (Noise §5.1).
    case nonceExhausted

    public var description: String {
        switch self {
        case .authenticationFailed: "Noise: authentication failed"
        case .malformed(let why): "Noise: malformed message (\(why))"
        case .wrongState: "Noise: call out of order or after a failure"
        case .nonceExhausted: "Noise: nonce exhausted"
        }
    }
}

/// A Noise CipherState (Noise rev. 34, §5.1) for AESGCM (§12.4): a 32-byte key `k` and a counter `n`.
///
/// The 96-bit AES-GCM nonce is 4 zero bytes followed by `n` as a 64-bit big-endian integer; the 16-byte
/// tag follows the ciphertext. `n` counts every successful encryption (or decryption) from 0, and
/// 2^64 − 1 is reserved, so the last usable nonce is 2^64 − 2. Used inside the handshake and, with
/// the keys from `NoiseHandshake.split()`, for transport messages.
public struct NoiseCipherState: Sendable {
    public static let tagLength = 16

    /// `k`; nil before the handshake has mixed in any key (then "encryption" is the identity, §5.1).
    public private(set) var key: [UInt8]?
    /// `n`, the nonce the next call will use.
    public private(set) var nonce: UInt64

    /// A cipher state with a 32-byte key, e.g. a transport key from `NoiseHandshake.split()`.
    public init(key: [UInt8], nonce: UInt64 = 0) throws(NoiseError) {
        guard key.count == 32 else { throw .malformed("cipher key must be 32 bytes") }
        self.key = key
        self.nonce = nonce
    }

    /// `InitializeKey(empty)`.
    init() {
        key = nil
        nonce = 0
    }

    /// `InitializeKey(k)`: a fresh key always restarts the counter at 0.
    init(handshakeKey: [UInt8]) {
        key = handshakeKey
        nonce = 0
    }

    var hasKey: Bool { key != nil }

    /// `EncryptWithAd(ad, plaintext)`: ciphertext ‖ tag, or the plaintext itself without a key.
    public mutating func encrypt(ad: [UInt8], plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard let key else { return plaintext }
        guard nonce < .max else { throw .nonceExhausted }
        guard let box = try? AES.GCM.seal(plaintext, using: SymmetricKey(data: key), nonce: Self.gcmNonce(nonce),
                                          authenticating: ad)
        else { throw .malformed("AES-GCM refused to seal") }
        nonce += 1
        return Array(box.ciphertext) + Array(box.tag)
    }

    /// `DecryptWithAd(ad, ciphertext)`: the plaintext, or `.authenticationFailed` (and `n` unchanged).
    public mutating func decrypt(ad: [UInt8], ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard let key else { return ciphertext }
        guard nonce < .max else { throw .nonceExhausted }
        guard ciphertext.count >= Self.tagLength else { throw .malformed("ciphertext shorter than its tag") }
        let split = ciphertext.count - Self.tagLength
        guard let box = try? AES.GCM.SealedBox(nonce: Self.gcmNonce(nonce), ciphertext: Array(ciphertext[..<split]),
                                               tag: Array(ciphertext[split...])),
              let plaintext = try? AES.GCM.open(box, using: SymmetricKey(data: key), authenticating: ad)
        else { throw .authenticationFailed }
        nonce += 1
        return Array(plaintext)
    }

    /// AESGCM's nonce (§12.4): 32 bits of zeros, then `n` big-endian.
    static func gcmNonce(_ n: UInt64) -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 12)
        for i in 0..<8 { bytes[4 + i] = UInt8(truncatingIfNeeded: n >> (56 - 8 * i)) }
        // 12 bytes is always a valid GCM nonce length.
        return try! AES.GCM.Nonce(data: bytes)
    }
}

/// A Noise SymmetricState (§5.2) with SHA-256 as HASH (HASHLEN = 32): chaining key `ck`, handshake
/// hash `h`, and the CipherState that the handshake encrypts with.
struct NoiseSymmetricState: Sendable {
    private(set) var chainingKey: [UInt8]
    private(set) var hash: [UInt8]
    private(set) var cipher = NoiseCipherState()

    /// `InitializeSymmetric(protocol_name)`: a name of at most 32 bytes is zero-padded into `h`,
    /// a longer one is hashed; `ck = h`; no cipher key yet.
    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        if name.count <= 32 {
            hash = name + [UInt8](repeating: 0, count: 32 - name.count)
        } else {
            hash = Array(SHA256.hash(data: name))
        }
        chainingKey = hash
    }

    var hasKey: Bool { cipher.hasKey }

    /// `MixHash(data)`: h = HASH(h ‖ data).
    mutating func mixHash(_ data: [UInt8]) {
        hash = Array(SHA256.hash(data: hash + data))
    }

    /// `MixKey(input_key_material)`: ck, k = HKDF(ck, ikm, 2).
    mutating func mixKey(_ inputKeyMaterial: [UInt8]) {
        let out = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial, outputs: 2)
        chainingKey = out[0]
        cipher = NoiseCipherState(handshakeKey: out[1])
    }

    /// `MixKeyAndHash(input_key_material)` (used for `psk`): ck, temp_h, k = HKDF(ck, ikm, 3); MixHash(temp_h).
    mutating func mixKeyAndHash(_ inputKeyMaterial: [UInt8]) {
        let out = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: inputKeyMaterial, outputs: 3)
        chainingKey = out[0]
        mixHash(out[1])
        cipher = NoiseCipherState(handshakeKey: out[2])
    }

    /// `EncryptAndHash(plaintext)`: encrypt with h as associated data, then mix the ciphertext into h.
    mutating func encryptAndHash(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let ciphertext = try cipher.encrypt(ad: hash, plaintext: plaintext)
        mixHash(ciphertext)
        return ciphertext
    }

    /// `DecryptAndHash(ciphertext)`: decrypt with h as associated data, then mix the ciphertext into h.
    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let plaintext = try cipher.decrypt(ad: hash, ciphertext: ciphertext)
        mixHash(ciphertext)
        return plaintext
    }

    /// `Split()`: k1, k2 = HKDF(ck, empty, 2). k1 is the initiator-to-responder key.
    func split() -> (k1: [UInt8], k2: [UInt8]) {
        let out = Self.hkdf(chainingKey: chainingKey, inputKeyMaterial: [], outputs: 2)
        return (out[0], out[1])
    }

    /// Noise's HKDF (§4.3) with HMAC-SHA256: temp_key = HMAC(ck, ikm); output1 = HMAC(temp_key, 0x01);
    /// output_i = HMAC(temp_key, output_(i-1) ‖ i) for i = 2, 3. Each output is 32 bytes.
    static func hkdf(chainingKey: [UInt8], inputKeyMaterial: [UInt8], outputs: Int) -> [[UInt8]] {
        let tempKey = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(
            for: inputKeyMaterial, using: SymmetricKey(data: chainingKey))))
        var result: [[UInt8]] = []
        var previous: [UInt8] = []
        for i in 1...outputs {
            previous = Array(HMAC<SHA256>.authenticationCode(for: previous + [UInt8(i)], using: tempKey))
            result.append(previous)
        }
        return result
    }
}
