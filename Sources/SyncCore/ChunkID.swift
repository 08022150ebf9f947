/// A keyed chunk id: HMAC-SHA-256 of the chunk's plaintext under the folder's chunk-id key.
/// Stored as four words so hashing and equality are cheap in the hot maps.
public struct ChunkID: Hashable, Sendable, Comparable, CustomStringConvertible {
    public static let byteCount = 32
    public var w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64

    public init(w0: UInt64, w1: UInt64, w2: UInt64, w3: UInt64) {
        self.w0 = w0; self.w1 = w1; self.w2 = w2; self.w3 = w3
    }

    /// `bytes` must hold exactly 32 bytes (big-endian words, so byte order sorts like the words).
    public init(_ bytes: UnsafeRawBufferPointer) {
        precondition(bytes.count == Self.byteCount)
        w0 = Self.word(bytes, 0); w1 = Self.word(bytes, 8); w2 = Self.word(bytes, 16); w3 = Self.word(bytes, 24)
    }

    public init?(bytes: [UInt8]) {
        guard bytes.count == Self.byteCount else { return nil }
        self = bytes.withUnsafeBytes { ChunkID($0) }
    }

    public var bytes: [UInt8] {
        var out = [UInt8](repeating: 0, count: 32)
        out.withUnsafeMutableBytes { write(to: $0.baseAddress!) }
        return out
    }

    public func write(to p: UnsafeMutableRawPointer) {
        p.storeBytes(of: w0.bigEndian, toByteOffset: 0, as: UInt64.self)
        p.storeBytes(of: w1.bigEndian, toByteOffset: 8, as: UInt64.self)
        p.storeBytes(of: w2.bigEndian, toByteOffset: 16, as: UInt64.self)
        p.storeBytes(of: w3.bigEndian, toByteOffset: 24, as: UInt64.self)
    }

    public var description: String { Hex.encode(bytes) }

    public static func < (a: ChunkID, b: ChunkID) -> Bool {
        (a.w0, a.w1, a.w2, a.w3) < (b.w0, b.w1, b.w2, b.w3)
    }

    private static func word(_ b: UnsafeRawBufferPointer, _ at: Int) -> UInt64 {
        UInt64(bigEndian: b.loadUnaligned(fromByteOffset: at, as: UInt64.self))
    }
}

/// One chunk of a file: its id and plaintext length. Offsets are the prefix sums of lengths.
public struct ChunkRef: Hashable, Sendable {
    public var id: ChunkID
    public var size: UInt32
    public init(id: ChunkID, size: UInt32) { self.id = id; self.size = size }
}

/// The chunk list of a file, encoded compactly for the index: 36 bytes per chunk (id, u32 LE size).
public enum ChunkListCodec {
    public static let entrySize = 36

    public static func encode(_ chunks: [ChunkRef]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: chunks.count * entrySize)
        out.withUnsafeMutableBytes { buf in
            for (i, c) in chunks.enumerated() {
                let p = buf.baseAddress! + i * entrySize
                c.id.write(to: p)
                p.storeBytes(of: c.size.littleEndian, toByteOffset: 32, as: UInt32.self)
            }
        }
        return out
    }

    public static func decode(_ bytes: UnsafeRawBufferPointer) -> [ChunkRef]? {
        guard bytes.count % entrySize == 0 else { return nil }
        var out: [ChunkRef] = []
        out.reserveCapacity(bytes.count / entrySize)
        var at = 0
        while at < bytes.count {
            let id = ChunkID(UnsafeRawBufferPointer(rebasing: bytes[at..<at + 32]))
            let size = UInt32(littleEndian: bytes.loadUnaligned(fromByteOffset: at + 32, as: UInt32.self))
            out.append(ChunkRef(id: id, size: size))
            at += entrySize
        }
        return out
    }

    public static func decode(_ bytes: [UInt8]) -> [ChunkRef]? {
        bytes.withUnsafeBytes { decode($0) }
    }
}

public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    public static func encode<C: Collection>(_ bytes: C) -> String where C.Element == UInt8 {
        var chars: [UInt8] = []
        chars.reserveCapacity(bytes.count * 2)
        for b in bytes { chars.append(digits[Int(b >> 4)]); chars.append(digits[Int(b & 15)]) }
        return String(decoding: chars, as: UTF8.self)
    }

    public static func decode(_ text: String) -> [UInt8]? {
        let u = Array(text.utf8)
        guard u.count % 2 == 0 else { return nil }
        var out: [UInt8] = []
        out.reserveCapacity(u.count / 2)
        var i = 0
        while i < u.count {
            guard let hi = value(u[i]), let lo = value(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        return out
    }

    private static func value(_ c: UInt8) -> UInt8? {
        switch c {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): return c - UInt8(ascii: "0")
        case UInt8(ascii: "a")...UInt8(ascii: "f"): return c - UInt8(ascii: "a") + 10
        case UInt8(ascii: "A")...UInt8(ascii: "F"): return c - UInt8(ascii: "A") + 10
        default: return nil
        }
    }
}
