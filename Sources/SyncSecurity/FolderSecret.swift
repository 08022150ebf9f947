@preconcurrency import Crypto

/// What a secret lets its holder do with a folder (Docs/security.md).
public enum AccessKind: String, Sendable, Codable, CaseIterable {
    case readWrite = "read-write", readOnly = "read-only", storage

    /// The text prefix of the secret kind (Protocol/secrets.md).
    public var prefix: String {
        switch self {
        case .readWrite: "syncd-rw-"
        case .readOnly: "syncd-ro-"
        case .storage: "syncd-st-"
        }
    }
}

/// Why a secret's text was refused. Every case names what to check, so a typo reads as a typo and
/// never silently becomes a new, empty folder.
public enum SecretError: Error, Equatable, CustomStringConvertible {
    case empty
    case unknownPrefix
    case invalidCharacter(Character, position: Int)
    case wrongLength(kind: AccessKind, expected: Int, actual: Int)
    case unsupportedVersion(UInt8)
    case checksumMismatch
    case cannotDerive(from: AccessKind, to: AccessKind)

    public var description: String {
        switch self {
        case .empty:
            "the secret is empty"
        case .unknownPrefix:
            "a secret starts with syncd-rw-, syncd-ro- or syncd-st-"
        case let .invalidCharacter(c, position):
            "character \(position) ('\(c)') is not part of a secret (letters a-z and digits 2-7 only)"
        case let .wrongLength(kind, expected, actual):
            "a \(kind.rawValue) secret has \(expected) characters after its prefix, this one has \(actual) "
                + "(was it cut off or pasted twice?)"
        case let .unsupportedVersion(v):
            "secret format version \(v) is not supported by this syncd (it knows version \(FolderSecret.formatVersion))"
        case .checksumMismatch:
            "the secret's checksum does not match: it looks mistyped"
        case let .cannotDerive(from, to):
            "a \(from.rawValue) secret cannot give a \(to.rawValue) secret: the chain only goes read-write → read-only → storage"
        }
    }
}

/// A folder secret: W (read-write), R (read-only) or S (storage), one-way chained
/// W → R → S with HKDF-SHA256 and distinct labels (Protocol/secrets.md is the byte-level spec).
///
/// - W is 32 random bytes. It seeds the folder's Ed25519 signing key; only W can sign manifests.
/// - R = HKDF(W, "syncd v1 read-only") and carries the folder public key. R gives every key
///   needed to read: chunker gear, chunk-id key, manifest key, chunk key.
/// - S = HKDF(R, "syncd v1 storage") and carries the public key. S gives the session PSK and the
///   public folder id, so storage peers join sessions and verify signatures without reading.
public struct FolderSecret: Sendable, Equatable, CustomStringConvertible {
    public static let formatVersion: UInt8 = 1
    public let kind: AccessKind
    /// The 32 secret bytes of this level (W, R or S).
    let secret: [UInt8]
    /// The folder's Ed25519 public key (derived from W; carried in R and S).
    public let folderPublicKey: [UInt8]

    init(kind: AccessKind, secret: [UInt8], folderPublicKey: [UInt8]) {
        precondition(secret.count == 32 && folderPublicKey.count == 32)
        self.kind = kind; self.secret = secret; self.folderPublicKey = folderPublicKey
    }

    /// A read-write secret from 32 bytes of W (tests and vectors; `generate` for real folders).
    public init(readWrite w: [UInt8]) {
        precondition(w.count == 32, "a read-write secret is 32 bytes")
        self.init(kind: .readWrite, secret: w, folderPublicKey: Array(Self.signingKey(w).publicKey.rawRepresentation))
    }

    /// A new read-write secret from the system's secure random generator.
    public static func generate() -> FolderSecret {
        FolderSecret(readWrite: SymmetricKey(size: .bits256).withUnsafeBytes { Array($0) })
    }

    // MARK: Text form

    /// `prefix || base32(version || secret || [public key] || checksum)`, lowercase, no padding.
    public var text: String {
        kind.prefix + Base32.encode(payload + Self.checksum(kind: kind, payload: payload))
    }

    public var description: String { text }

    private var payload: [UInt8] {
        [Self.formatVersion] + secret + (kind == .readWrite ? [] : folderPublicKey)
    }

    static func checksum(kind: AccessKind, payload: [UInt8]) -> [UInt8] {
        Array(SHA256.hash(data: Array(kind.prefix.utf8) + payload).prefix(4))
    }

    /// Expected base32 characters after the prefix.
    static func encodedLength(_ kind: AccessKind) -> Int {
        let bytes = 1 + 32 + (kind == .readWrite ? 0 : 32) + 4
        return (bytes * 8 + 4) / 5
    }

    /// Parses a secret's text. Surrounding whitespace is ignored; anything else wrong is an error
    /// that says what (prefix, character, length, version, checksum).
    public init(parsing text: String) throws(SecretError) {
        let trimmed = text.trimmingWhitespace()
        guard !trimmed.isEmpty else { throw .empty }
        guard let kind = AccessKind.allCases.first(where: { trimmed.hasPrefix($0.prefix) }) else { throw .unknownPrefix }
        let body = trimmed.dropFirst(kind.prefix.count)
        for (offset, c) in body.enumerated() where c.asciiValue.flatMap(Base32.value(of:)) == nil {
            throw .invalidCharacter(c, position: kind.prefix.count + offset + 1)
        }
        let expected = Self.encodedLength(kind)
        guard body.count == expected else { throw .wrongLength(kind: kind, expected: expected, actual: body.count) }
        guard let bytes = Base32.decode(String(body)) else { throw .checksumMismatch }   // non-zero padding bits
        let payload = Array(bytes.dropLast(4))
        guard payload[0] == Self.formatVersion else { throw .unsupportedVersion(payload[0]) }
        guard Self.checksum(kind: kind, payload: payload) == Array(bytes.suffix(4)) else { throw .checksumMismatch }
        let secret = Array(payload[1..<33])
        if kind == .readWrite {
            self.init(readWrite: secret)
        } else {
            self.init(kind: kind, secret: secret, folderPublicKey: Array(payload[33..<65]))
        }
    }

    // MARK: The one-way chain

    /// The read-only secret R (from W; R itself returns itself).
    public func readOnly() throws(SecretError) -> FolderSecret {
        switch kind {
        case .readWrite:
            FolderSecret(kind: .readOnly, secret: Self.hkdf(secret, Label.readOnly, 32), folderPublicKey: folderPublicKey)
        case .readOnly: self
        case .storage: throw .cannotDerive(from: .storage, to: .readOnly)
        }
    }

    /// The storage secret S (from W or R; S itself returns itself).
    public func storage() -> FolderSecret {
        switch kind {
        case .readWrite, .readOnly:
            let r = kind == .readOnly ? secret : Self.hkdf(secret, Label.readOnly, 32)
            return FolderSecret(kind: .storage, secret: Self.hkdf(r, Label.storage, 32), folderPublicKey: folderPublicKey)
        case .storage: return self
        }
    }

    /// Every key this secret gives, and nil for those it must not.
    public var keys: FolderKeys {
        let s = storage().secret
        let r = kind == .storage ? nil : (try? readOnly())?.secret
        let folderID = Array(SHA256.hash(data: Array(Label.folderID.utf8) + s + folderPublicKey))
        return FolderKeys(
            access: kind,
            folderID: folderID,
            folderPublicKey: folderPublicKey,
            sessionPSK: Self.hkdf(s, Label.sessionPSK, 32),
            chunkerGear: r.map { Self.gear(Self.hkdf($0, Label.chunkerGear, 2048)) },
            chunkIDKey: r.map { Self.hkdf($0, Label.chunkID, 32) },
            manifestKey: r.map { Self.hkdf($0, Label.manifest, 32) },
            chunkKey: r.map { Self.hkdf($0, Label.chunk, 32) },
            signingKey: kind == .readWrite ? Self.signingKey(secret) : nil)
    }

    /// HKDF labels (the `info` strings); Protocol/secrets.md lists them. Frozen: changing one is a new format version.
    enum Label {
        static let signingKey = "syncd v1 folder signing key"
        static let readOnly = "syncd v1 read-only"
        static let storage = "syncd v1 storage"
        static let chunkerGear = "syncd v1 chunker gear"
        static let chunkID = "syncd v1 chunk id"
        static let manifest = "syncd v1 manifest"
        static let chunk = "syncd v1 chunk"
        static let sessionPSK = "syncd v1 session psk"
        static let folderID = "syncd v1 folder id"
    }

    /// HKDF-SHA256 (RFC 5869) with an empty salt and `label` as info.
    static func hkdf(_ key: [UInt8], _ label: String, _ count: Int) -> [UInt8] {
        HKDF<SHA256>.deriveKey(inputKeyMaterial: SymmetricKey(data: key), info: Array(label.utf8), outputByteCount: count)
            .withUnsafeBytes { Array($0) }
    }

    static func signingKey(_ w: [UInt8]) -> Curve25519.Signing.PrivateKey {
        // Ed25519 keys from a 32-byte seed are deterministic (RFC 8032 §5.1.5).
        try! Curve25519.Signing.PrivateKey(rawRepresentation: hkdf(w, Label.signingKey, 32))
    }

    /// 2048 bytes → 256 little-endian 64-bit gear values.
    static func gear(_ bytes: [UInt8]) -> [UInt64] {
        (0..<256).map { i in (0..<8).reduce(UInt64(0)) { $0 | UInt64(bytes[i * 8 + $1]) << (8 * UInt64($1)) } }
    }
}

/// The keys a secret gives (nil where its access kind must not have one).
public struct FolderKeys: Sendable {
    public let access: AccessKind
    /// SHA-256("syncd v1 folder id" || S || folder public key): public, announced by gossip.
    public let folderID: [UInt8]
    public var folderIDString: String { Base32.encode(folderID) }
    public let folderPublicKey: [UInt8]
    /// Noise PSK for sessions between any holders of the folder (derived from S).
    public let sessionPSK: [UInt8]
    public let chunkerGear: [UInt64]?
    public let chunkIDKey: [UInt8]?
    public let manifestKey: [UInt8]?
    public let chunkKey: [UInt8]?
    public let signingKey: Curve25519.Signing.PrivateKey?
}

extension String {
    fileprivate func trimmingWhitespace() -> Substring {
        let isSpace: (Character) -> Bool = { $0.isWhitespace }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else { return "" }
        return self[first...last]
    }
}

