@preconcurrency import Crypto
import Foundation
import SyncCore

/// A device id: SHA-256 of the device's X25519 public key (its Noise static key).
/// Printed like `MFZWI3D-BONSGYC-…`: base32 in four groups of 13 characters, each followed by a
/// Luhn mod 32 check character, then grouped by seven — so a mistyped id is detected.
public struct DeviceID: Hashable, Sendable, CustomStringConvertible {
    public let bytes: [UInt8]

    public init(publicKey: [UInt8]) {
        bytes = Array(SHA256.hash(data: publicKey))
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == 32 else { return nil }
        self.bytes = bytes
    }

    /// The first 8 bytes, big-endian: the device's name in version vectors.
    public var short: ShortDeviceID {
        bytes.prefix(8).reduce(0) { $0 << 8 | UInt64($1) }
    }

    /// The first group of the printed id (`MFZWI3D`): how `syncd status` and the logs name a
    /// device in prose (`--json` and `syncd peers` give the whole id).
    public var name: String { Self.name(of: short) }

    /// `name` from the short id alone (its first 35 bits are the first seven base32 characters).
    public static func name(of short: ShortDeviceID) -> String {
        let bytes = (0..<8).map { UInt8(truncatingIfNeeded: short >> (56 - 8 * UInt64($0))) }
        return String(Base32.encode(bytes).uppercased().prefix(7))
    }

    public var description: String {
        let plain = Array(Base32.encode(bytes).uppercased().utf8)   // 52 characters
        var withChecks: [UInt8] = []
        for g in 0..<4 {
            let group = Array(plain[g * 13..<(g + 1) * 13])
            withChecks += group
            withChecks.append(Self.luhn32(group))
        }
        return stride(from: 0, to: withChecks.count, by: 7)
            .map { String(decoding: withChecks[$0..<$0 + 7], as: UTF8.self) }
            .joined(separator: "-")
    }

    public enum ParseError: Error, Equatable, CustomStringConvertible {
        case badLength, badCharacter, badCheckCharacter(group: Int)
        public var description: String {
            switch self {
            case .badLength: return "a device id has 56 characters (8 groups of 7)"
            case .badCharacter: return "a device id uses only A-Z and 2-7"
            case .badCheckCharacter(let g): return "check character of group \(g + 1) does not match: the id looks mistyped"
            }
        }
    }

    public init(parsing text: String) throws {
        let chars = Array(text.uppercased().utf8.filter { $0 != UInt8(ascii: "-") && $0 != UInt8(ascii: " ") })
        guard chars.count == 56 else { throw ParseError.badLength }
        var plain: [UInt8] = []
        for g in 0..<4 {
            let group = Array(chars[g * 14..<g * 14 + 13])
            guard group.allSatisfy({ Base32.alphabetUpper.contains($0) }) else { throw ParseError.badCharacter }
            guard Self.luhn32(group) == chars[g * 14 + 13] else { throw ParseError.badCheckCharacter(group: g) }
            plain += group
        }
        guard let decoded = Base32.decode(String(decoding: plain, as: UTF8.self).lowercased()), decoded.count == 32 else {
            throw ParseError.badCharacter
        }
        bytes = decoded
    }

    /// Luhn mod N over the base32 alphabet.
    static func luhn32(_ group: [UInt8]) -> UInt8 {
        let n = 32
        var factor = 1, sum = 0
        for c in group.reversed() {
            let code = Base32.alphabetUpper.firstIndex(of: c)!
            var addend = factor * code
            factor = factor == 2 ? 1 : 2
            addend = addend / n + addend % n
            sum += addend
        }
        return Base32.alphabetUpper[(n - sum % n) % n]
    }
}

/// This device's long-term key pair, created on first start in the home directory (mode 0600).
public struct DeviceIdentity: Sendable {
    public let privateKey: Curve25519.KeyAgreement.PrivateKey
    public var publicKey: [UInt8] { Array(privateKey.publicKey.rawRepresentation) }
    public var deviceID: DeviceID { DeviceID(publicKey: publicKey) }

    public init(privateKey: Curve25519.KeyAgreement.PrivateKey) {
        self.privateKey = privateKey
    }

    public enum LoadError: Error, CustomStringConvertible {
        case unreadable(String), malformed(String), unwritable(String)
        public var description: String {
            switch self {
            case .unreadable(let p): return "cannot read the device key \(p)"
            case .malformed(let p): return "the device key \(p) is damaged (expected 32 bytes)"
            case .unwritable(let p): return "cannot create the device key \(p)"
            }
        }
    }

    /// Loads the key at `path`, or creates it atomically (0600; never overwrites one that appeared).
    public static func loadOrCreate(at path: String) throws -> DeviceIdentity {
        if let data = FileManager.default.contents(atPath: path) {
            guard data.count == 32, let key = try? Curve25519.KeyAgreement.PrivateKey(rawRepresentation: data) else {
                throw LoadError.malformed(path)
            }
            return DeviceIdentity(privateKey: key)
        }
        let key = Curve25519.KeyAgreement.PrivateKey()
        let temp = path + ".tmp.\(getpid())"
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw LoadError.unwritable(path) }
        let raw = Array(key.rawRepresentation)
        let ok = raw.withUnsafeBytes { write(fd, $0.baseAddress, 32) } == 32 && fsync(fd) == 0
        close(fd)
        defer { unlink(temp) }
        guard ok else { throw LoadError.unwritable(path) }
        if link(temp, path) != 0 {
            if errno == EEXIST { return try loadOrCreate(at: path) }  // another process won the race
            throw LoadError.unwritable(path)
        }
        return DeviceIdentity(privateKey: key)
    }
}
