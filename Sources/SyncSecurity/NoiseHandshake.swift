@preconcurrency import Crypto

/// Why a handshake step failed. After any failure the handshake is dead.
public enum NoiseError: Error, Sendable, Equatable, CustomStringConvertible {
    case authenticationFailed, malformed(String), wrongState, nonceExhausted

    public var description: String {
        switch self {
        case .authenticationFailed: "authentication failed"
        case .malformed(let why): "malformed handshake message: \(why)"
        case .wrongState: "handshake message out of order"
        case .nonceExhausted: "nonce exhausted"
        }
    }
}

/// Noise CipherState (Noise §5.1) with AESGCM: nonce = 4 zero bytes || n as u64 big-endian.
public struct NoiseCipherState: Sendable {
    public private(set) var key: [UInt8]?
    public private(set) var nonce: UInt64 = 0

    public init(key: [UInt8]? = nil) { self.key = key }

    public mutating func encrypt(ad: [UInt8], plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard let key else { return plaintext }
        guard nonce < UInt64.max else { throw .nonceExhausted }
        defer { nonce += 1 }
        guard let box = try? AES.GCM.seal(plaintext, using: SymmetricKey(data: key), nonce: Self.gcmNonce(nonce),
                                          authenticating: ad) else { throw .authenticationFailed }
        return Array(box.ciphertext) + Array(box.tag)
    }

    public mutating func decrypt(ad: [UInt8], ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard let key else { return ciphertext }
        guard nonce < UInt64.max else { throw .nonceExhausted }
        guard ciphertext.count >= 16 else { throw .malformed("ciphertext shorter than its tag") }
        guard let box = try? AES.GCM.SealedBox(nonce: Self.gcmNonce(nonce), ciphertext: ciphertext.dropLast(16),
                                               tag: ciphertext.suffix(16)),
              let plain = try? AES.GCM.open(box, using: SymmetricKey(data: key), authenticating: ad)
        else { throw .authenticationFailed }
        nonce += 1
        return Array(plain)
    }

    static func gcmNonce(_ n: UInt64) -> AES.GCM.Nonce {
        var bytes = [UInt8](repeating: 0, count: 4)
        withUnsafeBytes(of: n.bigEndian) { bytes.append(contentsOf: $0) }
        return try! AES.GCM.Nonce(data: bytes)
    }
}

/// Noise SymmetricState (§5.2) over SHA-256.
struct NoiseSymmetricState: Sendable {
    var cipher = NoiseCipherState()
    var chainingKey: [UInt8]
    var hash: [UInt8]

    init(protocolName: String) {
        let name = Array(protocolName.utf8)
        hash = name.count <= 32 ? name + [UInt8](repeating: 0, count: 32 - name.count) : Array(SHA256.hash(data: name))
        chainingKey = hash
    }

    mutating func mixHash(_ data: [UInt8]) { hash = Array(SHA256.hash(data: hash + data)) }

    mutating func mixKey(_ input: [UInt8]) {
        let out = Self.hkdf(chainingKey, input, outputs: 2)
        chainingKey = out[0]
        cipher = NoiseCipherState(key: out[1])
    }

    mutating func mixKeyAndHash(_ input: [UInt8]) {
        let out = Self.hkdf(chainingKey, input, outputs: 3)
        chainingKey = out[0]
        mixHash(out[1])
        cipher = NoiseCipherState(key: out[2])
    }

    mutating func encryptAndHash(_ plaintext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let c = try cipher.encrypt(ad: hash, plaintext: plaintext)
        mixHash(c)
        return c
    }

    mutating func decryptAndHash(_ ciphertext: [UInt8]) throws(NoiseError) -> [UInt8] {
        let p = try cipher.decrypt(ad: hash, ciphertext: ciphertext)
        mixHash(ciphertext)
        return p
    }

    func split() -> (NoiseCipherState, NoiseCipherState) {
        let out = Self.hkdf(chainingKey, [], outputs: 2)
        return (NoiseCipherState(key: out[0]), NoiseCipherState(key: out[1]))
    }

    /// Noise's HKDF (§4.3): HMAC-SHA256 extract with the chaining key, then 2 or 3 expand blocks.
    static func hkdf(_ chainingKey: [UInt8], _ input: [UInt8], outputs: Int) -> [[UInt8]] {
        let temp = SymmetricKey(data: Array(HMAC<SHA256>.authenticationCode(for: input, using: SymmetricKey(data: chainingKey))))
        var out: [[UInt8]] = []
        var previous: [UInt8] = []
        for i in 1...outputs {
            previous = Array(HMAC<SHA256>.authenticationCode(for: previous + [UInt8(i)], using: temp))
            out.append(previous)
        }
        return out
    }
}

/// Noise_XXpsk3_25519_AESGCM_SHA256 (Noise rev. 34, §7.5 and §9) as a pure state machine:
///
///     -> e
///     <- e, ee, s, es
///     -> s, se, psk
///
/// With a PSK, every `e` token also mixes the ephemeral key into the cipher key (§9.2). The PSK is
/// mixed last, so only message 3 — and everything after it — needs the secret: a responder sees a
/// wrong PSK as a tag failure on message 3 and never returns its payload.
public struct NoiseHandshake: Sendable {
    public static let protocolName = "Noise_XXpsk3_25519_AESGCM_SHA256"
    public static let maxMessage = 65535

    public enum Role: Sendable { case initiator, responder }

    enum Token { case e, s, ee, es, se, psk }
    static let pattern: [[Token]] = [[.e], [.e, .ee, .s, .es], [.s, .se, .psk]]

    public let role: Role
    private var symmetric: NoiseSymmetricState
    private let psk: [UInt8]
    private let staticKey: Curve25519.KeyAgreement.PrivateKey
    private var ephemeralKey: Curve25519.KeyAgreement.PrivateKey?
    private let injectedEphemeral: Curve25519.KeyAgreement.PrivateKey?
    private var remoteEphemeral: Curve25519.KeyAgreement.PublicKey?
    public private(set) var remoteStaticKey: [UInt8]?
    private var remoteStatic: Curve25519.KeyAgreement.PublicKey?
    private var step = 0
    private var failed = false

    /// `ephemeralKey` is for test vectors only; a real handshake draws a fresh one.
    public init(role: Role, prologue: [UInt8], psk: [UInt8], staticKey: Curve25519.KeyAgreement.PrivateKey,
                ephemeralKey: Curve25519.KeyAgreement.PrivateKey? = nil) {
        precondition(psk.count == 32, "Noise PSKs are 32 bytes")
        self.role = role
        self.psk = psk
        self.staticKey = staticKey
        self.injectedEphemeral = ephemeralKey
        symmetric = NoiseSymmetricState(protocolName: Self.protocolName)
        symmetric.mixHash(prologue)
    }

    public var isComplete: Bool { step == Self.pattern.count && !failed }
    public var handshakeHash: [UInt8] { symmetric.hash }

    private var isMyTurn: Bool { (step % 2 == 0) == (role == .initiator) }

    public mutating func writeMessage(payload: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard !failed, step < Self.pattern.count, isMyTurn else { failed = true; throw .wrongState }
        do throws(NoiseError) {
            var out: [UInt8] = []
            for token in Self.pattern[step] {
                switch token {
                case .e:
                    let e = injectedEphemeral ?? Curve25519.KeyAgreement.PrivateKey()
                    ephemeralKey = e
                    let pub = Array(e.publicKey.rawRepresentation)
                    out += pub
                    symmetric.mixHash(pub)
                    symmetric.mixKey(pub)
                case .s: out += try symmetric.encryptAndHash(Array(staticKey.publicKey.rawRepresentation))
                case .psk: symmetric.mixKeyAndHash(psk)
                case .ee, .es, .se: try mixDH(token)
                }
            }
            out += try symmetric.encryptAndHash(payload)
            guard out.count <= Self.maxMessage else { throw NoiseError.malformed("message exceeds 65535 bytes") }
            step += 1
            return out
        } catch {
            failed = true
            throw error
        }
    }

    public mutating func readMessage(_ message: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard !failed, step < Self.pattern.count, !isMyTurn else { failed = true; throw .wrongState }
        do throws(NoiseError) {
            guard message.count <= Self.maxMessage else { throw NoiseError.malformed("message exceeds 65535 bytes") }
            var rest = message[...]
            func take(_ n: Int) throws(NoiseError) -> [UInt8] {
                guard rest.count >= n else { throw .malformed("message too short") }
                defer { rest = rest.dropFirst(n) }
                return Array(rest.prefix(n))
            }
            for token in Self.pattern[step] {
                switch token {
                case .e:
                    let pub = try take(32)
                    guard let key = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: pub) else {
                        throw NoiseError.malformed("ephemeral key")
                    }
                    remoteEphemeral = key
                    symmetric.mixHash(pub)
                    symmetric.mixKey(pub)
                case .s:
                    let pub = try symmetric.decryptAndHash(try take(symmetric.cipher.key == nil ? 32 : 48))
                    guard let key = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: pub) else {
                        throw NoiseError.malformed("static key")
                    }
                    remoteStatic = key
                    remoteStaticKey = pub
                case .psk: symmetric.mixKeyAndHash(psk)
                case .ee, .es, .se: try mixDH(token)
                }
            }
            let payload = try symmetric.decryptAndHash(Array(rest))
            step += 1
            return payload
        } catch {
            failed = true
            remoteStaticKey = nil
            throw error
        }
    }

    /// The two transport keys, oriented for this side: the initiator sends with the first.
    public func split() throws(NoiseError) -> (sendKey: [UInt8], receiveKey: [UInt8]) {
        guard isComplete else { throw .wrongState }
        let (c1, c2) = symmetric.split()
        return role == .initiator ? (c1.key!, c2.key!) : (c2.key!, c1.key!)
    }

    /// The transport cipher states (c1 initiator→responder, c2 responder→initiator), for vectors.
    func splitStates() -> (NoiseCipherState, NoiseCipherState) { symmetric.split() }

    /// ee, es, se (§7.1): which local key meets which remote key depends on the role.
    private mutating func mixDH(_ token: Token) throws(NoiseError) {
        let local: Curve25519.KeyAgreement.PrivateKey?
        let remote: Curve25519.KeyAgreement.PublicKey?
        switch (token, role) {
        case (.ee, _): (local, remote) = (ephemeralKey, remoteEphemeral)
        case (.es, .initiator): (local, remote) = (ephemeralKey, remoteStatic)
        case (.es, .responder): (local, remote) = (staticKey, remoteEphemeral)
        case (.se, .initiator): (local, remote) = (staticKey, remoteEphemeral)
        case (.se, .responder): (local, remote) = (ephemeralKey, remoteStatic)
        default: throw .wrongState
        }
        guard let local, let remote else { throw .wrongState }
        // swift-crypto refuses an all-zero shared secret (a low-order remote key): fail the handshake.
        guard let shared = try? local.sharedSecretFromKeyAgreement(with: remote) else { throw .malformed("invalid key") }
        symmetric.mixKey(shared.withUnsafeBytes { Array($0) })
    }
}
