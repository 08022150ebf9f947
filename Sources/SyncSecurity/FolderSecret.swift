// TEMP stand-in until the real FolderSecret lands (same API).
@preconcurrency import Crypto
public enum AccessKind: String, Sendable, Codable, CaseIterable { case readWrite = "read-write", readOnly = "read-only", storage }
public struct SecretError: Error, CustomStringConvertible { public var description: String }
public struct FolderSecret: Sendable, Equatable, CustomStringConvertible {
    public let kind: AccessKind
    let raw: [UInt8]
    public static func generate() -> FolderSecret { FolderSecret(kind: .readWrite, raw: (0..<32).map { _ in UInt8.random(in: 0...255) }) }
    init(kind: AccessKind, raw: [UInt8]) { self.kind = kind; self.raw = raw }
    public init(parsing text: String) throws(SecretError) {
        let t = text.trimmingCharacters(in: .whitespaces)
        let kinds: [(String, AccessKind)] = [("syncd-rw-", .readWrite), ("syncd-ro-", .readOnly), ("syncd-st-", .storage)]
        guard let k = kinds.first(where: { t.hasPrefix($0.0) }), let b = Base32.decode(String(t.dropFirst(9))), b.count == 36,
              Array(SHA256.hash(data: b.prefix(32))).prefix(4).elementsEqual(b.suffix(4)) else { throw SecretError(description: "looks mistyped") }
        kind = k.1; raw = Array(b.prefix(32))
    }
    public var text: String {
        let p = kind == .readWrite ? "syncd-rw-" : kind == .readOnly ? "syncd-ro-" : "syncd-st-"
        return p + Base32.encode(raw + Array(SHA256.hash(data: raw)).prefix(4))
    }
    public var description: String { text }
    public func readOnly() throws(SecretError) -> FolderSecret {
        switch kind { case .readWrite: return FolderSecret(kind: .readOnly, raw: Array(SHA256.hash(data: raw + [1]))); case .readOnly: return self; case .storage: throw SecretError(description: "storage") }
    }
    public func storage() -> FolderSecret { kind == .storage ? self : FolderSecret(kind: .storage, raw: Array(SHA256.hash(data: (try! readOnly()).raw + [2]))) }
    public var keys: FolderKeys {
        let s = storage().raw
        var gear: [UInt64]? = nil
        if kind != .storage { gear = (0..<256).map { UInt64($0) &* 0x9E37_79B9_7F4A_7C15 ^ UInt64(raw[$0 % 32]) } }
        return FolderKeys(access: kind, folderID: Array(SHA256.hash(data: s)), folderPublicKey: [], sessionPSK: s, chunkerGear: gear,
                          chunkIDKey: kind == .storage ? nil : Array(SHA256.hash(data: raw + [3])), manifestKey: nil, chunkKey: nil, signingKey: nil)
    }
}
public struct FolderKeys: Sendable {
    public let access: AccessKind
    public let folderID: [UInt8]
    public var folderIDString: String { Base32.encode(folderID) }
    public let folderPublicKey: [UInt8]
    public let sessionPSK: [UInt8]
    public let chunkerGear: [UInt64]?
    public let chunkIDKey: [UInt8]?
    public let manifestKey: [UInt8]?
    public let chunkKey: [UInt8]?
    public let signingKey: Curve25519.Signing.PrivateKey?
}
