import SyncSecurity

/// The established half of a session: AES-256-GCM (system OpenSSL) keyed by the Noise split,
/// with implicit counter nonces (Noise §5.1) — so a replayed, dropped or reordered frame fails
/// authentication and ends the session — and a Noise REKEY (§11.3) every `rekeyInterval` frames
/// in each direction.
public struct TransportCipher {
    public static let maxPlaintext = 1 << 20
    public let rekeyInterval: UInt64
    private var sendKey: [UInt8]
    private var receiveKey: [UInt8]
    private var sender: BulkAEAD
    private var receiver: BulkAEAD
    public private(set) var sendCounter: UInt64 = 0
    public private(set) var receiveCounter: UInt64 = 0

    public init(sendKey: [UInt8], receiveKey: [UInt8], rekeyInterval: UInt64 = 1 << 20) {
        precondition(rekeyInterval > 0 && rekeyInterval < UInt64.max)
        self.sendKey = sendKey
        self.receiveKey = receiveKey
        self.sender = BulkAEAD(key: sendKey)
        self.receiver = BulkAEAD(key: receiveKey)
        self.rekeyInterval = rekeyInterval
    }

    /// Encrypts one message into a frame body (plaintext + 16-byte tag).
    public mutating func seal(_ plaintext: [UInt8]) -> [UInt8] {
        precondition(plaintext.count <= Self.maxPlaintext, "callers split messages above the frame limit")
        let out = sender.seal(nonce: BulkAEAD.noiseNonce(sendCounter), plaintext: plaintext)
        sendCounter += 1
        if sendCounter % rekeyInterval == 0 { (sendKey, sender) = Self.rekeyed(sendKey) }
        return out
    }

    public mutating func open(_ body: [UInt8]) throws(WireError) -> [UInt8] {
        guard body.count >= BulkAEAD.tagSize else { throw .authenticationFailed }
        let plain: [UInt8]
        do { plain = try receiver.open(nonce: BulkAEAD.noiseNonce(receiveCounter), ciphertext: body) } catch { throw .authenticationFailed }
        receiveCounter += 1
        if receiveCounter % rekeyInterval == 0 { (receiveKey, receiver) = Self.rekeyed(receiveKey) }
        return plain
    }

    /// Noise REKEY: k' = first 32 bytes of ENCRYPT(k, 2^64 - 1, "", 32 zero bytes).
    static func rekeyed(_ key: [UInt8]) -> ([UInt8], BulkAEAD) {
        let next = Array(BulkAEAD(key: key).seal(nonce: BulkAEAD.noiseNonce(UInt64.max), plaintext: [UInt8](repeating: 0, count: 32)).prefix(32))
        return (next, BulkAEAD(key: next))
    }
}
