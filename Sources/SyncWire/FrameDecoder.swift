/// Errors that end a session. The daemon closes that one connection and carries on.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    case frameTooLarge(Int, limit: Int)
    case emptyFrame
    case authenticationFailed
    case malformed(String)

    public var description: String {
        switch self {
        case .frameTooLarge(let n, let limit): return "frame of \(n) bytes exceeds the \(limit)-byte limit"
        case .emptyFrame: return "empty frame"
        case .authenticationFailed: return "frame failed authentication (tampered, replayed, reordered or wrong key)"
        case .malformed(let why): return "malformed message: \(why)"
        }
    }
}

/// Splits a byte stream into frames: `u32 big-endian length || length bytes` (Protocol/wire.md).
/// A length above `maxFrameSize` fails at once, before any of the body is buffered, so a hostile
/// peer cannot make the daemon allocate more than one frame.
public struct FrameDecoder: Sendable {
    public static let defaultMaxFrameSize = (1 << 20) + 64
    public var maxFrameSize: Int
    private var buffer: [UInt8] = []
    private var start = 0

    public init(maxFrameSize: Int = FrameDecoder.defaultMaxFrameSize) {
        self.maxFrameSize = maxFrameSize
    }

    /// Bytes received but not yet returned as frames.
    public var buffered: Int { buffer.count - start }

    public mutating func feed<C: Collection>(_ bytes: C) where C.Element == UInt8 {
        if start > 0 && start == buffer.count {
            buffer.removeAll(keepingCapacity: true)
            start = 0
        }
        buffer.append(contentsOf: bytes)
    }

    /// The next complete frame's body, nil when more bytes are needed.
    public mutating func next() throws(WireError) -> [UInt8]? {
        guard buffered >= 4 else { return nil }
        let length = Int(buffer[start]) << 24 | Int(buffer[start + 1]) << 16 | Int(buffer[start + 2]) << 8 | Int(buffer[start + 3])
        if length > maxFrameSize { throw .frameTooLarge(length, limit: maxFrameSize) }
        if length == 0 { throw .emptyFrame }
        guard buffered >= 4 + length else { return nil }
        let body = Array(buffer[(start + 4)..<(start + 4 + length)])
        start += 4 + length
        if start > 1 << 20 && start * 2 > buffer.count {  // compact now and then, not per frame
            buffer.removeFirst(start)
            start = 0
        }
        return body
    }

    public static func encode(_ body: [UInt8]) -> [UInt8] {
        precondition(!body.isEmpty && body.count <= Int(UInt32.max))
        let n = UInt32(body.count)
        return [UInt8(n >> 24), UInt8(truncatingIfNeeded: n >> 16), UInt8(truncatingIfNeeded: n >> 8), UInt8(truncatingIfNeeded: n)] + body
    }
}
