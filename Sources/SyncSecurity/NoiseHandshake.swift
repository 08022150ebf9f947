@preconcurrency import Crypto

/// `Noise_XXpsk3_25519_AESGCM_SHA256` (Noise Protocol Framework rev. 34) as a pure state machine:
/// bytes in, bytes out, no I/O and no clocks.
///
///     XXpsk3:                    (§7.5 XX, with the psk3 modifier of §9.4)
///       -> e
///       <- e, ee, s, es
///       -> s, se, psk
///
/// This is a `HandshakeState` (§5.3) with X25519 (§12.1), AES-256-GCM (§12.4) and SHA-256 (§12.5).
/// Because it is a PSK handshake, every `e` token is `MixHash(e.pub)` followed by `MixKey(e.pub)` (§9.2),
/// so even message 1's payload is encrypted. The PSK is mixed last, in message 3: a responder whose
/// PSK differs fails message 3's payload tag with `.authenticationFailed` and returns nothing from it.
///
/// Any error kills the handshake: every later call throws `.wrongState` (§5: "If any error is
/// signaled … the handshake has failed"). A message is applied all-or-nothing.
public struct NoiseHandshake: Sendable {
    public static let protocolName = "Noise_XXpsk3_25519_AESGCM_SHA256"
    /// "All Noise messages are less than or equal to 65535 bytes in length" (§3).
    public static let maxMessageLength = 65535
    /// DHLEN for 25519 (§12.1); also the PSK length (§9).
    public static let keyLength = 32

    public enum Role: Sendable, Equatable { case initiator, responder }

    /// Message-pattern tokens (§7.1, §9.2).
    enum Token: Sendable { case e, s, ee, es, se, psk }

    /// The three message patterns; message `i` is written by the initiator when `i` is even.
    static let messagePatterns: [[Token]] = [
        [.e],
        [.e, .ee, .s, .es],
        [.s, .se, .psk],
    ]

    enum Phase: Sendable, Equatable {
        /// Waiting for message `index` (0-based) to be written or read.
        case message(Int)
        case complete
        case dead
    }

    public let role: Role
    private var symmetric: NoiseSymmetricState
    private let psk: [UInt8]
    private let localStatic: Curve25519.KeyAgreement.PrivateKey
    /// Injected for test vectors, otherwise generated when the `e` token is written.
    private var localEphemeral: Curve25519.KeyAgreement.PrivateKey?
    private var remoteEphemeral: Curve25519.KeyAgreement.PublicKey?
    private var remoteStatic: Curve25519.KeyAgreement.PublicKey?
    private(set) var phase: Phase = .message(0)

    /// `Initialize()` (§5.3): `InitializeSymmetric(protocol_name)`, then `MixHash(prologue)`.
    /// XX has no pre-messages. `psk` must be 32 bytes; otherwise the first call throws `.malformed`.
    /// `ephemeralKey` exists for test vectors only: a real handshake must use a fresh random one.
    public init(role: Role, prologue: [UInt8], psk: [UInt8], staticKey: Curve25519.KeyAgreement.PrivateKey,
                ephemeralKey: Curve25519.KeyAgreement.PrivateKey? = nil) {
        self.role = role
        self.psk = psk
        self.localStatic = staticKey
        self.localEphemeral = ephemeralKey
        symmetric = NoiseSymmetricState(protocolName: Self.protocolName)
        symmetric.mixHash(prologue)
    }

    /// True once all three messages have been written or read successfully.
    public var isComplete: Bool { phase == .complete }

    /// The peer's 32-byte X25519 static public key, once message 2 (initiator) or message 3
    /// (responder) has been read; nil before that and after any failure.
    public var remoteStaticKey: [UInt8]? {
        guard phase != .dead, let remoteStatic else { return nil }
        return Array(remoteStatic.rawRepresentation)
    }

    /// `h` (§5.2; `GetHandshakeHash()`, §11.2). After completion it identifies the session (channel binding).
    public var handshakeHash: [UInt8] { symmetric.hash }

    /// `WriteMessage(payload, message_buffer)` (§5.3) for the next message, which must be ours to send.
    public mutating func writeMessage(payload: [UInt8]) throws(NoiseError) -> [UInt8] {
        let index = try claimTurn(writing: true)
        var next = self
        do throws(NoiseError) {
            let message = try next.write(Self.messagePatterns[index], payload: payload)
            next.advance(past: index)
            self = next
            return message
        } catch {
            kill()
            throw error
        }
    }

    /// `ReadMessage(message, payload_buffer)` (§5.3) for the next message, which must be the peer's.
    /// Returns the decrypted payload; nothing is returned, and nothing is kept, if any check fails.
    public mutating func readMessage(_ message: [UInt8]) throws(NoiseError) -> [UInt8] {
        let index = try claimTurn(writing: false)
        var next = self
        do throws(NoiseError) {
            let payload = try next.read(Self.messagePatterns[index], message: message)
            next.advance(past: index)
            self = next
            return payload
        } catch {
            kill()
            throw error
        }
    }

    /// `Split()` (§5.2) after the handshake: `k1` encrypts initiator → responder, `k2` the other way.
    /// Oriented for this side, so the initiator gets `(k1, k2)` and the responder `(k2, k1)`.
    /// Use each key with a `NoiseCipherState` whose nonce starts at 0.
    public func split() throws(NoiseError) -> (sendKey: [UInt8], receiveKey: [UInt8]) {
        guard phase == .complete else { throw .wrongState }
        let (k1, k2) = symmetric.split()
        return role == .initiator ? (k1, k2) : (k2, k1)
    }

    // MARK: - Steps

    /// The index of the next message if it is ours to write (or the peer's, when reading); kills otherwise.
    private mutating func claimTurn(writing: Bool) throws(NoiseError) -> Int {
        guard case .message(let index) = phase else {
            kill()
            throw .wrongState
        }
        let initiatorSends = index % 2 == 0
        let weSend = initiatorSends == (role == .initiator)
        guard weSend == writing else {
            kill()
            throw .wrongState
        }
        guard psk.count == Self.keyLength else {
            kill()
            throw .malformed("PSK must be \(Self.keyLength) bytes")
        }
        return index
    }

    private mutating func advance(past index: Int) {
        phase = index + 1 == Self.messagePatterns.count ? .complete : .message(index + 1)
    }

    /// A dead handshake forgets what it learned from the peer.
    private mutating func kill() {
        phase = .dead
        remoteStatic = nil
        remoteEphemeral = nil
    }

    private mutating func write(_ tokens: [Token], payload: [UInt8]) throws(NoiseError) -> [UInt8] {
        var message: [UInt8] = []
        for token in tokens {
            switch token {
            case .e:
                let ephemeral = localEphemeral ?? Curve25519.KeyAgreement.PrivateKey()
                localEphemeral = ephemeral
                let publicKey = Array(ephemeral.publicKey.rawRepresentation)
                message += publicKey
                mixEphemeral(publicKey)
            case .s:
                message += try symmetric.encryptAndHash(Array(localStatic.publicKey.rawRepresentation))
            case .ee, .es, .se:
                try mixDH(token)
            case .psk:
                symmetric.mixKeyAndHash(psk)
            }
        }
        message += try symmetric.encryptAndHash(payload)
        guard message.count <= Self.maxMessageLength else {
            throw .malformed("message would be \(message.count) bytes, over \(Self.maxMessageLength)")
        }
        return message
    }

    private mutating func read(_ tokens: [Token], message: [UInt8]) throws(NoiseError) -> [UInt8] {
        guard message.count <= Self.maxMessageLength else {
            throw .malformed("message is \(message.count) bytes, over \(Self.maxMessageLength)")
        }
        var reader = NoiseMessageReader(message)
        for token in tokens {
            switch token {
            case .e:
                let publicKey = try reader.take(Self.keyLength, "ephemeral key")
                remoteEphemeral = try Self.publicKey(publicKey)
                mixEphemeral(publicKey)
            case .s:
                // DHLEN + 16 bytes if a key is set, otherwise DHLEN (§5.3); in XXpsk3 there is always a key.
                let length = Self.keyLength + (symmetric.hasKey ? NoiseCipherState.tagLength : 0)
                let plaintext = try symmetric.decryptAndHash(try reader.take(length, "static key"))
                remoteStatic = try Self.publicKey(plaintext)
            case .ee, .es, .se:
                try mixDH(token)
            case .psk:
                symmetric.mixKeyAndHash(psk)
            }
        }
        // With a key, fewer than 16 remaining bytes is `.malformed` (no room for the payload's tag).
        return try symmetric.decryptAndHash(reader.remaining)
    }

    /// The `e` token (§5.3) in a PSK handshake (§9.2): `MixHash(e.pub)`, then `MixKey(e.pub)`.
    private mutating func mixEphemeral(_ publicKey: [UInt8]) {
        symmetric.mixHash(publicKey)
        symmetric.mixKey(publicKey)
    }

    /// `ee`, `es`, `se` (§5.3): `MixKey(DH(local, remote))`. The first letter names the initiator's key,
    /// the second the responder's, so which of our keys meets which of theirs depends on the role.
    /// A low-order remote key yields an all-zero DH output, which Noise accepts (§12.1).
    private mutating func mixDH(_ token: Token) throws(NoiseError) {
        let local: Curve25519.KeyAgreement.PrivateKey?
        let remote: Curve25519.KeyAgreement.PublicKey?
        switch (token, role) {
        case (.ee, _):
            (local, remote) = (localEphemeral, remoteEphemeral)
        case (.es, .initiator), (.se, .responder):
            (local, remote) = (localEphemeral, remoteStatic)
        case (.es, .responder), (.se, .initiator):
            (local, remote) = (localStatic, remoteEphemeral)
        default:
            throw .wrongState
        }
        guard let local, let remote else { throw .wrongState }
        guard let shared = try? local.sharedSecretFromKeyAgreement(with: remote) else {
            throw .malformed("X25519 failed")
        }
        symmetric.mixKey(shared.withUnsafeBytes { Array($0) })
    }

    private static func publicKey(_ bytes: [UInt8]) throws(NoiseError) -> Curve25519.KeyAgreement.PublicKey {
        guard let key = try? Curve25519.KeyAgreement.PublicKey(rawRepresentation: bytes) else {
            throw .malformed("not an X25519 public key")
        }
        return key
    }
}

/// Consumes a handshake message front to back; running short is `.malformed`, never a trap.
private struct NoiseMessageReader {
    private var bytes: ArraySlice<UInt8>

    init(_ bytes: [UInt8]) { self.bytes = bytes[...] }

    var remaining: [UInt8] { Array(bytes) }

    mutating func take(_ count: Int, _ what: String) throws(NoiseError) -> [UInt8] {
        guard bytes.count >= count else { throw .malformed("message too short: \(what) truncated") }
        let field = Array(bytes.prefix(count))
        bytes = bytes.dropFirst(count)
        return field
    }
}
