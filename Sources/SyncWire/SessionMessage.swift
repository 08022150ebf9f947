import SyncCore

/// What travels inside an established session: one message per transport frame, `type:u8 || body`
/// (Protocol/wire.md, "Messages"). Decoding is strict — unknown types, short or trailing bytes
/// all fail — and a failure closes the session.
public enum SessionMessage: Sendable, Equatable {
    /// First message each way: who I am for this folder and how far my own index has come.
    case hello(Hello)
    case ping(UInt64)
    case pong(UInt64)
    /// A sealed manifest (Protocol/manifest.md), exactly as its origin sealed it.
    case index([UInt8])
    /// "I hold `origin`'s index `indexID` up to `sequence`" — the receiver's acknowledgement.
    case indexAck(origin: ShortDeviceID, indexID: UInt64, sequence: UInt64)
    /// Anti-entropy: the sender's view of the folder — its own sequence when computed, how many
    /// live paths it holds, and a hash over the live (path, version) set (Protocol/wire.md,
    /// "Anti-entropy"). Equal digests between caught-up peers mean equal indexes.
    case digest(Digest)
    /// Ask for one chunk; `id` is its keyed chunk id.
    case request(id: UInt32, chunk: ChunkID, size: UInt32)
    /// The answer: plaintext chunk bytes for read-write and read-only peers, a sealed chunk
    /// (Protocol/manifest.md, "Sealed chunks") to and from storage peers.
    case data(id: UInt32, bytes: [UInt8])
    /// The answer as raw deflate (Protocol/wire.md, "Compression"): only on a session where both
    /// sides offered `SessionMachine.Features.deflate`, only plaintext chunks, and only when it is
    /// smaller. `rawSize` is the chunk's size, 1 … 1 MiB; it must equal the size requested.
    case dataDeflated(id: UInt32, rawSize: UInt32, bytes: [UInt8])
    case requestFailed(id: UInt32, reason: UInt8)
    /// A sealed chunk pushed to a storage peer for safekeeping.
    case store([UInt8])
    /// "I now hold these chunks" (1 … `maxHave` keyed chunk ids): sent by a device pulling new
    /// data to its other peers, so that receivers of the same data fetch it from each other
    /// (Protocol/wire.md, "Swarm").
    case have([ChunkID])
    /// `syncd bench peer`: ask for `size` bytes (0 … `maxBenchBytes`; 0 times a round trip) of scratch
    /// payload, served from memory — nothing of the folder is read or written.
    case benchRequest(id: UInt32, size: UInt32)
    /// The answer: exactly the `size` asked for.
    case benchData(id: UInt32, bytes: [UInt8])
    /// Last words before closing: why.
    case close(String)

    public struct Hello: Sendable, Equatable {
        public var access: AccessByte
        public var indexID: UInt64
        public var sequence: UInt64
        public init(access: AccessByte, indexID: UInt64, sequence: UInt64) {
            self.access = access; self.indexID = indexID; self.sequence = sequence
        }
    }

    public struct Digest: Sendable, Equatable {
        public var sequence: UInt64
        public var liveCount: UInt64
        /// 32 bytes.
        public var hash: [UInt8]
        public init(sequence: UInt64, liveCount: UInt64, hash: [UInt8]) {
            self.sequence = sequence; self.liveCount = liveCount; self.hash = hash
        }
    }

    /// Chunk ids in one `have` message at most.
    public static let maxHave = 1024
    /// The most a bench request may ask for, and a bench answer carry: 1 MiB less the answer's
    /// 5-byte header, so that an answer always fits one frame.
    public static let maxBenchBytes = UInt32(TransportCipher.maxPlaintext - 5)

    public enum AccessByte: UInt8, Sendable { case readWrite = 1, readOnly = 2, storage = 3 }

    enum Tag: UInt8 {
        case hello = 0x01, ping = 0x02, pong = 0x03, index = 0x10, indexAck = 0x11, digest = 0x12
        case request = 0x20, data = 0x21, requestFailed = 0x22, store = 0x23, have = 0x24
        case benchRequest = 0x25, benchData = 0x26, dataDeflated = 0x27, close = 0x7F
    }

    public var encoded: [UInt8] {
        var w = ByteWriter()
        switch self {
        case .hello(let h):
            w.u8(Tag.hello.rawValue); w.u8(h.access.rawValue); w.u64(h.indexID); w.u64(h.sequence)
        case .ping(let n): w.u8(Tag.ping.rawValue); w.u64(n)
        case .pong(let n): w.u8(Tag.pong.rawValue); w.u64(n)
        case .index(let m): w.u8(Tag.index.rawValue); w.raw(m)
        case let .indexAck(origin, indexID, sequence):
            w.u8(Tag.indexAck.rawValue); w.u64(origin); w.u64(indexID); w.u64(sequence)
        case .digest(let d):
            w.u8(Tag.digest.rawValue); w.u64(d.sequence); w.u64(d.liveCount); w.raw(d.hash)
        case let .request(id, chunk, size):
            w.u8(Tag.request.rawValue); w.u32(id); w.raw(chunk.bytes); w.u32(size)
        case let .data(id, bytes): w.u8(Tag.data.rawValue); w.u32(id); w.raw(bytes)
        case let .requestFailed(id, reason): w.u8(Tag.requestFailed.rawValue); w.u32(id); w.u8(reason)
        case let .dataDeflated(id, rawSize, bytes): w.u8(Tag.dataDeflated.rawValue); w.u32(id); w.u32(rawSize); w.raw(bytes)
        case .store(let sealed): w.u8(Tag.store.rawValue); w.raw(sealed)
        case .have(let ids):
            precondition((1...Self.maxHave).contains(ids.count), "a have message carries 1 … \(Self.maxHave) chunk ids")
            w.u8(Tag.have.rawValue); w.u16(UInt16(ids.count))
            for id in ids { w.raw(id.bytes) }
        case let .benchRequest(id, size): w.u8(Tag.benchRequest.rawValue); w.u32(id); w.u32(size)
        case let .benchData(id, bytes): w.u8(Tag.benchData.rawValue); w.u32(id); w.raw(bytes)
        case .close(let why): w.u8(Tag.close.rawValue); w.string(String(why.prefix(200)))
        }
        return w.bytes
    }

    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        guard let tag = Tag(rawValue: try r.u8()) else { throw .malformed("unknown message type \(bytes[0])") }
        switch tag {
        case .hello:
            guard let access = AccessByte(rawValue: try r.u8()) else { throw .malformed("unknown access kind") }
            self = .hello(Hello(access: access, indexID: try r.u64(), sequence: try r.u64()))
        case .ping: self = .ping(try r.u64())
        case .pong: self = .pong(try r.u64())
        case .index:
            guard r.remaining > 0 else { throw .malformed("empty index message") }
            self = .index(Array(try r.take(r.remaining)))
        case .indexAck: self = .indexAck(origin: try r.u64(), indexID: try r.u64(), sequence: try r.u64())
        case .digest: self = .digest(Digest(sequence: try r.u64(), liveCount: try r.u64(), hash: Array(try r.take(32))))
        case .request:
            let id = try r.u32()
            guard let chunk = ChunkID(bytes: Array(try r.take(32))) else { throw .malformed("chunk id") }
            let size = try r.u32()
            guard size > 0, size <= 1 << 20 else { throw .malformed("chunk size \(size)") }
            self = .request(id: id, chunk: chunk, size: size)
        case .data: self = .data(id: try r.u32(), bytes: Array(try r.take(r.remaining)))
        case .requestFailed: self = .requestFailed(id: try r.u32(), reason: try r.u8())
        case .dataDeflated:
            let id = try r.u32()
            let rawSize = try r.u32()
            guard rawSize > 0, rawSize <= 1 << 20 else { throw .malformed("deflated chunk size \(rawSize)") }
            guard r.remaining > 0 else { throw .malformed("empty deflated chunk") }
            self = .dataDeflated(id: id, rawSize: rawSize, bytes: Array(try r.take(r.remaining)))
        case .store:
            guard r.remaining > 0 else { throw .malformed("empty store message") }
            self = .store(Array(try r.take(r.remaining)))
        case .have:
            let count = Int(try r.u16())
            guard (1...Self.maxHave).contains(count) else { throw .malformed("have message with \(count) chunk ids") }
            var ids: [ChunkID] = []
            ids.reserveCapacity(count)
            for _ in 0..<count {
                guard let id = ChunkID(bytes: Array(try r.take(32))) else { throw .malformed("chunk id") }
                ids.append(id)
            }
            self = .have(ids)
        case .benchRequest:
            let id = try r.u32(), size = try r.u32()
            guard size <= Self.maxBenchBytes else { throw .malformed("bench size \(size)") }
            self = .benchRequest(id: id, size: size)
        case .benchData:
            let id = try r.u32()
            guard r.remaining <= Self.maxBenchBytes else { throw .malformed("bench data of \(r.remaining) bytes") }
            self = .benchData(id: id, bytes: Array(try r.take(r.remaining)))
        case .close: self = .close(try r.string())
        }
        try r.expectEnd()
    }
}
