import SyncCore

/// Little helpers for the big-endian binary formats of Protocol/. The reader never trusts a
/// length: every count is checked against the bytes that remain before anything is allocated.
public struct ByteWriter {
    public private(set) var bytes: [UInt8] = []
    public init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    public mutating func u8(_ v: UInt8) { bytes.append(v) }
    public mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    public mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.bigEndian) { bytes.append(contentsOf: $0) } }
    public mutating func raw<C: Collection>(_ b: C) where C.Element == UInt8 { bytes.append(contentsOf: b) }
    /// u16 length + UTF-8.
    public mutating func string(_ s: String) {
        let u = Array(s.utf8)
        precondition(u.count <= Int(UInt16.max))
        u16(UInt16(u.count))
        raw(u)
    }
    /// u16 length + the raw bytes a `RelativePath` path text stands for (a name, a link target).
    /// A string that is not path text — a bug upstream — goes out as its UTF-8 bytes.
    public mutating func name(_ text: String) {
        let u = RelativePath.bytes(text) ?? Array(text.utf8)
        precondition(u.count <= Int(UInt16.max))
        u16(UInt16(u.count))
        raw(u)
    }
}

public struct ByteReader {
    private let bytes: [UInt8]
    public private(set) var offset = 0

    public init(_ bytes: [UInt8]) { self.bytes = bytes }

    public var remaining: Int { bytes.count - offset }

    public mutating func u8() throws(WireError) -> UInt8 { try take(1).first! }  // slices keep their parent's indices
    public mutating func u16() throws(WireError) -> UInt16 { UInt16(try int(2)) }
    public mutating func u32() throws(WireError) -> UInt32 { UInt32(try int(4)) }
    public mutating func u64() throws(WireError) -> UInt64 { try int(8) }

    public mutating func take(_ n: Int) throws(WireError) -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw .malformed("needs \(n) bytes at offset \(offset), \(remaining) left") }
        defer { offset += n }
        return bytes[offset..<offset + n]
    }

    public mutating func string() throws(WireError) -> String {
        let n = Int(try u16())
        let raw = try take(n)
        guard let s = String(validating: raw, as: UTF8.self) else { throw .malformed("invalid UTF-8 at offset \(offset - n)") }
        return s
    }

    /// u16 length + raw bytes (any bytes, not necessarily UTF-8), as path text.
    public mutating func name() throws(WireError) -> String {
        let n = Int(try u16())
        return RelativePath.text(fromBytes: try take(n))
    }

    /// A count of items of at least `itemSize` bytes each, checked against what remains.
    public mutating func count32(itemSize: Int) throws(WireError) -> Int {
        let n = Int(try u32())
        guard n * itemSize <= remaining else { throw .malformed("count \(n) larger than the message") }
        return n
    }

    public func expectEnd() throws(WireError) {
        guard remaining == 0 else { throw .malformed("\(remaining) trailing bytes") }
    }

    private mutating func int(_ n: Int) throws(WireError) -> UInt64 {
        try take(n).reduce(0) { $0 << 8 | UInt64($1) }
    }
}
