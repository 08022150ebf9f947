/// Where a member listens: its `--listen` address (UDP gossip, TCP push/pull and sessions).
public struct Endpoint: Hashable, Sendable, CustomStringConvertible, Comparable {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) { self.host = host; self.port = port }

    /// "HOST:PORT" or "[v6]:PORT".
    public init?(_ text: String) {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty else { return nil }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }
    public static func < (a: Endpoint, b: Endpoint) -> Bool { a.description < b.description }
}

public enum MemberStatus: UInt8, Sendable, Equatable {
    case alive = 0, suspect = 1, dead = 2, left = 3

    public var name: String {
        switch self {
        case .alive: "alive"
        case .suspect: "suspect"
        case .dead: "dead"
        case .left: "left"
        }
    }
}

/// One member as gossip describes it. `name` is the device's short id; `uid` is drawn at every
/// process start, so a restarted daemon is a new life that stale rumours about the old one cannot
/// touch.
public struct MemberState: Sendable, Equatable {
    public var name: UInt64
    public var uid: UInt64
    public var incarnation: UInt64
    public var status: MemberStatus
    public var endpoint: Endpoint
    public var meta: [UInt8]

    public init(name: UInt64, uid: UInt64, incarnation: UInt64, status: MemberStatus, endpoint: Endpoint, meta: [UInt8]) {
        self.name = name; self.uid = uid; self.incarnation = incarnation; self.status = status
        self.endpoint = endpoint; self.meta = meta
    }
}

/// The messages of the membership protocol (Protocol/gossip.md).
public enum SWIMMessage: Sendable, Equatable {
    /// Are you there? `target` names whom the sender means, so a new process on a reused address
    /// does not answer for the old one.
    case ping(seq: UInt32, target: UInt64, source: UInt64)
    /// Please ping `target` for me and forward its ack; send a nack if it does not answer.
    case pingReq(seq: UInt32, target: UInt64, endpoint: Endpoint, wantNack: Bool, source: UInt64)
    case ack(seq: UInt32)
    case nack(seq: UInt32)
    case alive(MemberState)
    case suspect(name: UInt64, uid: UInt64, incarnation: UInt64, from: UInt64)
    /// `from == name` means the member left gracefully.
    case dead(name: UInt64, uid: UInt64, incarnation: UInt64, from: UInt64)

    /// Which member a broadcast is about (a newer broadcast about the same member replaces it).
    var subject: UInt64? {
        switch self {
        case .alive(let m): m.name
        case .suspect(let name, _, _, _), .dead(let name, _, _, _): name
        default: nil
        }
    }
}

/// Binary codec: a packet is `count:u8` then, per message, `length:u16 type:u8 body`.
/// Integers big-endian; strings and byte strings `length:u16` then bytes.
public enum SWIMCodec {
    public enum DecodeError: Error, Equatable { case malformed(String) }

    public static let maxMetaBytes = 512

    public static func encode(_ messages: [SWIMMessage]) -> [UInt8] {
        var out: [UInt8] = [UInt8(messages.count)]
        for m in messages {
            let body = encode(m)
            out += [UInt8(body.count >> 8), UInt8(truncatingIfNeeded: body.count)] + body
        }
        return out
    }

    /// Encoded size of one message inside a packet (with its length prefix).
    public static func size(_ message: SWIMMessage) -> Int { 2 + encode(message).count }

    static func encode(_ message: SWIMMessage) -> [UInt8] {
        var w = Writer()
        switch message {
        case let .ping(seq, target, source): w.u8(1); w.u32(seq); w.u64(target); w.u64(source)
        case let .pingReq(seq, target, endpoint, wantNack, source):
            w.u8(2); w.u32(seq); w.u64(target); w.endpoint(endpoint); w.u8(wantNack ? 1 : 0); w.u64(source)
        case .ack(let seq): w.u8(3); w.u32(seq)
        case .nack(let seq): w.u8(4); w.u32(seq)
        case .alive(let m):
            w.u8(5); w.u64(m.name); w.u64(m.uid); w.u64(m.incarnation); w.endpoint(m.endpoint); w.bytes(m.meta)
        case let .suspect(name, uid, inc, from): w.u8(6); w.u64(name); w.u64(uid); w.u64(inc); w.u64(from)
        case let .dead(name, uid, inc, from): w.u8(7); w.u64(name); w.u64(uid); w.u64(inc); w.u64(from)
        }
        return w.out
    }

    public static func decode(_ packet: [UInt8]) throws(DecodeError) -> [SWIMMessage] {
        var r = Reader(bytes: packet)
        let count = Int(try r.u8())
        guard count > 0 else { throw .malformed("empty packet") }
        var out: [SWIMMessage] = []
        for _ in 0..<count {
            let length = Int(try r.u16())
            var body = Reader(bytes: try r.take(length))
            out.append(try decodeOne(&body))
            guard body.atEnd else { throw .malformed("trailing bytes in a message") }
        }
        guard r.atEnd else { throw .malformed("trailing bytes after the messages") }
        return out
    }

    static func decodeOne(_ r: inout Reader) throws(DecodeError) -> SWIMMessage {
        switch try r.u8() {
        case 1: return .ping(seq: try r.u32(), target: try r.u64(), source: try r.u64())
        case 2:
            let seq = try r.u32(), target = try r.u64(), endpoint = try r.endpoint()
            let nack = try r.u8()
            guard nack <= 1 else { throw .malformed("nack flag") }
            return .pingReq(seq: seq, target: target, endpoint: endpoint, wantNack: nack == 1, source: try r.u64())
        case 3: return .ack(seq: try r.u32())
        case 4: return .nack(seq: try r.u32())
        case 5:
            let name = try r.u64(), uid = try r.u64(), inc = try r.u64(), endpoint = try r.endpoint()
            let meta = try r.bytes()
            guard meta.count <= maxMetaBytes else { throw .malformed("metadata too large") }
            return .alive(MemberState(name: name, uid: uid, incarnation: inc, status: .alive, endpoint: endpoint, meta: meta))
        case 6: return .suspect(name: try r.u64(), uid: try r.u64(), incarnation: try r.u64(), from: try r.u64())
        case 7: return .dead(name: try r.u64(), uid: try r.u64(), incarnation: try r.u64(), from: try r.u64())
        case let t: throw .malformed("unknown message type \(t)")
        }
    }

    /// Full state for TCP push/pull: `count:u32` then per member the alive body plus `status:u8`.
    public static func encodeState(_ members: [MemberState], join: Bool) -> [UInt8] {
        var w = Writer()
        w.u8(join ? 1 : 0)
        w.u32(UInt32(members.count))
        for m in members {
            w.u64(m.name); w.u64(m.uid); w.u64(m.incarnation); w.u8(m.status.rawValue); w.endpoint(m.endpoint); w.bytes(m.meta)
        }
        return w.out
    }

    public static let maxStateMembers = 100_000

    public static func decodeState(_ bytes: [UInt8]) throws(DecodeError) -> (members: [MemberState], join: Bool) {
        var r = Reader(bytes: bytes)
        let join = try r.u8()
        guard join <= 1 else { throw .malformed("join flag") }
        let count = Int(try r.u32())
        guard count <= maxStateMembers, count * 30 <= r.remaining else { throw .malformed("member count \(count)") }
        var out: [MemberState] = []
        for _ in 0..<count {
            let name = try r.u64(), uid = try r.u64(), inc = try r.u64()
            guard let status = MemberStatus(rawValue: try r.u8()) else { throw .malformed("status") }
            let endpoint = try r.endpoint()
            let meta = try r.bytes()
            guard meta.count <= maxMetaBytes else { throw .malformed("metadata too large") }
            out.append(MemberState(name: name, uid: uid, incarnation: inc, status: status, endpoint: endpoint, meta: meta))
        }
        guard r.atEnd else { throw .malformed("trailing bytes") }
        return (out, join == 1)
    }

    struct Writer {
        var out: [UInt8] = []
        mutating func u8(_ v: UInt8) { out.append(v) }
        mutating func u16(_ v: UInt16) { out += [UInt8(v >> 8), UInt8(truncatingIfNeeded: v)] }
        mutating func u32(_ v: UInt32) { for s in stride(from: 24, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt32(s))) } }
        mutating func u64(_ v: UInt64) { for s in stride(from: 56, through: 0, by: -8) { out.append(UInt8(truncatingIfNeeded: v >> UInt64(s))) } }
        mutating func bytes(_ b: [UInt8]) { u16(UInt16(min(b.count, Int(UInt16.max)))); out += b.prefix(Int(UInt16.max)) }
        mutating func endpoint(_ e: Endpoint) { bytes(Array(e.host.utf8)); u16(e.port) }
    }

    struct Reader {
        let data: [UInt8]
        var at = 0
        init(bytes: [UInt8]) { data = bytes }
        var remaining: Int { data.count - at }
        var atEnd: Bool { at == data.count }

        mutating func take(_ n: Int) throws(DecodeError) -> [UInt8] {
            guard n >= 0, n <= remaining else { throw .malformed("truncated") }
            defer { at += n }
            return Array(data[at..<at + n])
        }
        mutating func u8() throws(DecodeError) -> UInt8 { try take(1)[0] }
        mutating func u16() throws(DecodeError) -> UInt16 { try take(2).reduce(0) { $0 << 8 | UInt16($1) } }
        mutating func u32() throws(DecodeError) -> UInt32 { try take(4).reduce(0) { $0 << 8 | UInt32($1) } }
        mutating func u64() throws(DecodeError) -> UInt64 { try take(8).reduce(0) { $0 << 8 | UInt64($1) } }
        mutating func bytes() throws(DecodeError) -> [UInt8] { try take(Int(try u16())) }
        mutating func endpoint() throws(DecodeError) -> Endpoint {
            let host = try bytes()
            guard !host.isEmpty, host.count <= 255, let text = String(validating: host, as: UTF8.self) else {
                throw .malformed("host")
            }
            return Endpoint(host: text, port: try u16())
        }
    }
}
