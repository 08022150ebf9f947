import SyncCore
import SyncSecurity
@testable import SyncWire
import XCTest

final class ChunkListPiecesTests: XCTestCase {
    private let ids = ChunkHasher(key: [UInt8](repeating: 3, count: 32))

    /// `n` chunks with keyed ids of distinct contents, sizes 1...65536.
    private func chunks(_ n: Int, salt: UInt32 = 0) -> [ChunkRef] {
        (0..<n).map { i in
            let tag = withUnsafeBytes(of: (UInt32(i), salt)) { Array($0) }
            return ChunkRef(id: ids.chunkID(tag), size: UInt32(i * 7919 % 65536 + 1))
        }
    }

    private func file(_ list: [ChunkRef], path: String = "db.bin") -> FileEntry {
        FileEntry(path: path, metadata: FileMetadata(kind: .file, size: list.reduce(0) { $0 + Int64($1.size) }, mode: 0o644,
                                                     mtimeNs: 1, ctimeNs: 0, inode: 0),
                  version: VersionVector().incremented(by: 5), sequence: 1, chunks: list)
    }

    func test_split_reassemblesAndVerifies() throws {
        let list = chunks(5000)
        let pieces = ChunkListPieces.split(list, ids: ids)
        XCTAssertEqual(pieces.map { Int($0.ref.count) }.reduce(0, +), 5000)
        XCTAssertTrue(pieces.allSatisfy { $0.ref.count >= 1 && $0.ref.count <= 256 })
        XCTAssertTrue((40...120).contains(5000 / pieces.count), "about 64 chunks per piece: \(5000 / pieces.count)")
        for p in pieces {
            XCTAssertEqual(ids.chunkID(p.bytes), p.ref.id, "a piece is addressed by the keyed id of its bytes")
            XCTAssertEqual(p.bytes.count, p.ref.byteCount)
        }
        let back = try pieces.flatMap { try ChunkListPieces.decode($0.bytes, as: $0.ref) }
        XCTAssertEqual(back, list)
    }

    func test_anEditInTheMiddle_changesOnlyThePiecesAroundIt() {
        let list = chunks(4096)
        var edited = list
        edited.replaceSubrange(2048..<2049, with: chunks(17, salt: 9))   // 1 MiB inserted: ~17 new chunks
        let before = Set(ChunkListPieces.split(list, ids: ids).map(\.ref))
        let after = ChunkListPieces.split(edited, ids: ids).map(\.ref)
        let new = after.filter { !before.contains($0) }
        XCTAssertLessThanOrEqual(new.count, 2, "only the piece holding the edit changes")
        XCTAssertEqual(ChunkListPieces.split(list, ids: ids).map(\.ref), ChunkListPieces.split(list, ids: ids).map(\.ref), "deterministic")
    }

    func test_noCutPointForLong_stillEndsPiecesAt256() {
        // Ids that never start with a byte below 4: only the cap cuts.
        let list = (0..<600).map { i in ChunkRef(id: ChunkID(w0: 0xFF00_0000_0000_0000 | UInt64(i), w1: 0, w2: 0, w3: 0), size: 1) }
        XCTAssertEqual(ChunkListPieces.split(list, ids: ids).map(\.ref.count), [256, 256, 88])
    }

    func test_manifestCarriesPieces_andResolvesToTheSameEntry() throws {
        let list = chunks(1000)
        let entry = file(list)
        let pieces = ChunkListPieces.split(list, ids: ids)
        let listed = ManifestEntry(entry, pieces: pieces.map(\.ref))
        let inline = ManifestCodec.encode([entry]), compact = ManifestCodec.encode([listed])
        XCTAssertLessThan(compact.count * 20, inline.count, "\(compact.count) vs \(inline.count) bytes")
        let decoded = try ManifestCodec.decode(compact)
        XCTAssertEqual(decoded.count, 1)
        XCTAssertEqual(decoded[0].pieces, pieces.map(\.ref))
        XCTAssertTrue(decoded[0].entry.chunks.isEmpty, "chunks come once the pieces are fetched")
        let lists = try pieces.map { try ChunkListPieces.decode($0.bytes, as: $0.ref) }
        XCTAssertEqual(try decoded[0].resolved(with: lists), entry)
        // Pieces that do not cover the size are refused.
        XCTAssertThrowsError(try decoded[0].resolved(with: Array(lists.dropLast())))
        XCTAssertThrowsError(try decoded[0].resolved(with: lists.dropLast() + [[ChunkRef(id: list[0].id, size: 1)]]))
    }

    func test_codec_refusesHostilePieces() {
        let list = chunks(300)
        let refs = ChunkListPieces.split(list, ids: ids).map(\.ref)
        func reject(_ entry: FileEntry, _ pieces: [ChunkListPieces.Ref], _ why: String) {
            XCTAssertThrowsError(try ManifestCodec.decode(ManifestCodec.encode([ManifestEntry(entry, pieces: pieces)])), why)
        }
        var dir = file([], path: "d")
        dir.metadata.kind = .directory
        reject(dir, refs, "pieces on a directory")
        var gone = file(list)
        gone.deleted = true
        reject(gone, refs, "pieces on a deletion")
        reject(file(list), [], "no pieces at all")
        var tiny = file(list)
        tiny.metadata.size = 10
        reject(tiny, refs, "more chunks than bytes")
        reject(file(list), [ChunkListPieces.Ref(id: refs[0].id, count: 257)], "a piece longer than the cap")
        reject(file(list), [ChunkListPieces.Ref(id: refs[0].id, count: 0)], "an empty piece")
        XCTAssertThrowsError(try ChunkListPieces.decode([UInt8](repeating: 0, count: 35), as: refs[0]), "wrong length")
        XCTAssertThrowsError(try ChunkListPieces.decode([UInt8](repeating: 0, count: 36), as: .init(id: refs[0].id, count: 1)), "empty chunk")
    }
}
