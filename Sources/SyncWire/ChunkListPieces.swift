import SyncCore
import SyncSecurity

/// A long chunk list travels as *pieces* (Protocol/manifest.md, "Chunk-list pieces"): runs of the
/// list cut where a chunk's id starts with a byte below 4 (one chunk in 64, on average) or after
/// 256 chunks. The cut depends only on the chunks themselves, so an edit that changes a few
/// chunks changes only the piece or two around them, and a renamed file keeps all of its pieces.
/// A piece is addressed like a chunk — by the keyed id of its bytes — and fetched, served, stored
/// on storage peers and verified exactly like one. A manifest entry then names its pieces
/// (36 bytes per ~64 chunks) instead of every chunk (36 bytes each).
public enum ChunkListPieces {
    /// A piece as a manifest entry names it: its keyed id and how many chunks it lists.
    public struct Ref: Hashable, Sendable {
        public var id: ChunkID
        public var count: UInt32
        public init(id: ChunkID, count: UInt32) { self.id = id; self.count = count }
        /// The piece's size in bytes: 36 per chunk.
        public var byteCount: Int { Int(count) * recordSize }
        /// The piece as a fetchable chunk.
        public var chunk: ChunkRef { ChunkRef(id: id, size: UInt32(byteCount)) }
    }

    public static let recordSize = 36
    /// Lists longer than this travel as pieces; shorter ones inline (one round trip less).
    public static let inlineLimit = 128
    public static let maxChunksPerPiece = 256

    /// Whether the list ends a piece after `chunk`.
    static func cutsAfter(_ chunk: ChunkRef) -> Bool { chunk.id.w0 >> 56 < 4 }

    /// Cuts `chunks` into pieces: each piece's reference and bytes (`id[32] size:u32` big-endian
    /// per chunk, the manifest's own chunk encoding).
    public static func split(_ chunks: [ChunkRef], ids: ChunkHasher) -> [(ref: Ref, bytes: [UInt8])] {
        var out: [(ref: Ref, bytes: [UInt8])] = []
        var start = 0
        for i in chunks.indices where cutsAfter(chunks[i]) || i - start + 1 == maxChunksPerPiece || i == chunks.count - 1 {
            let bytes = encode(chunks[start...i])
            out.append((Ref(id: ids.chunkID(bytes), count: UInt32(i - start + 1)), bytes))
            start = i + 1
        }
        return out
    }

    static func encode(_ chunks: ArraySlice<ChunkRef>) -> [UInt8] {
        var w = ByteWriter(capacity: chunks.count * recordSize)
        for c in chunks {
            withUnsafeTemporaryAllocation(byteCount: 32, alignment: 8) { c.id.write(to: $0.baseAddress!); w.raw(UnsafeRawBufferPointer($0)) }
            w.u32(c.size)
        }
        return w.bytes
    }

    /// The chunks a fetched piece lists. The caller has checked its keyed id against `ref.id`;
    /// this checks its length and that no chunk is empty.
    public static func decode(_ bytes: [UInt8], as ref: Ref) throws(WireError) -> [ChunkRef] {
        guard bytes.count == ref.byteCount else { throw .malformed("piece of \(bytes.count) bytes, expected \(ref.byteCount)") }
        var r = ByteReader(bytes)
        var out: [ChunkRef] = []
        out.reserveCapacity(Int(ref.count))
        for _ in 0..<ref.count {
            let id = try r.take(32).withUnsafeBytes { ChunkID($0) }
            let size = try r.u32()
            guard size > 0 else { throw .malformed("empty chunk in a piece") }
            out.append(ChunkRef(id: id, size: size))
        }
        return out
    }
}
