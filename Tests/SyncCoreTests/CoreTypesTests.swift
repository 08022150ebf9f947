@testable import SyncCore
import XCTest

final class CoreTypesTests: XCTestCase {
    func test_versionVector_compare_shouldDetectOrderAndConcurrency() {
        let empty = VersionVector()
        let a1 = empty.incremented(by: 1)
        let a2 = a1.incremented(by: 1)
        let a1b1 = a1.incremented(by: 2)
        let a2b0 = a2
        XCTAssertEqual(empty.compare(empty), .equal)
        XCTAssertEqual(a2.compare(a1), .greater)
        XCTAssertEqual(a1.compare(a2), .lesser)
        XCTAssertEqual(a1b1.compare(a2b0), .concurrent)
        XCTAssertEqual(a1b1.merged(with: a2).compare(a1b1), .greater)
        XCTAssertEqual(a1b1.merged(with: a2).compare(a2), .greater)
    }

    func test_versionVector_incremented_shouldRespectClockFloor() {
        let v = VersionVector().incremented(by: 9, now: 1000)
        XCTAssertEqual(v.value(for: 9), 1000)
        XCTAssertEqual(v.incremented(by: 9, now: 5).value(for: 9), 1001)
    }

    func test_versionVector_encoding_shouldRoundTripAndRejectGarbage() {
        let v = VersionVector([.init(device: 3, value: 7), .init(device: 1, value: 2), .init(device: 3, value: 5)])
        XCTAssertEqual(v.counters.map(\.device), [1, 3])
        XCTAssertEqual(v.value(for: 3), 7)
        XCTAssertEqual(VersionVector(encoded: v.encoded), v)
        XCTAssertNil(VersionVector(encoded: [1, 2, 3]))
    }

    func test_chunkList_shouldRoundTrip() {
        let id = ChunkID(bytes: Array(0..<32))!
        XCTAssertEqual(id.bytes, Array(0..<32))
        XCTAssertEqual(id.description.prefix(8), "00010203")
        let list = [ChunkRef(id: id, size: 65536), ChunkRef(id: ChunkID(w0: 1, w1: 2, w2: 3, w3: 4), size: 7)]
        let bytes = ChunkListCodec.encode(list)
        XCTAssertEqual(bytes.count, 72)
        XCTAssertEqual(ChunkListCodec.decode(bytes), list)
        XCTAssertNil(ChunkListCodec.decode(Array(bytes.dropLast())))
        XCTAssertNil(ChunkID(bytes: [1, 2]))
    }

    func test_hex_shouldRoundTripAndRejectOddOrBadInput() {
        XCTAssertEqual(Hex.encode([0, 255, 16]), "00ff10")
        XCTAssertEqual(Hex.decode("00FF10"), [0, 255, 16])
        XCTAssertNil(Hex.decode("abc"))
        XCTAssertNil(Hex.decode("zz"))
    }

    func test_relativePath_validate_shouldRejectEscapesAndStateDir() {
        XCTAssertNil(RelativePath.validate("a/b.txt"))
        XCTAssertNil(RelativePath.validate("a/.syncd"), "only the root's .syncd is reserved")
        XCTAssertEqual(RelativePath.validate(""), .empty)
        XCTAssertEqual(RelativePath.validate("/etc/passwd"), .absolute)
        XCTAssertEqual(RelativePath.validate("a/../../x"), .dotComponent)
        XCTAssertEqual(RelativePath.validate("./a"), .dotComponent)
        XCTAssertEqual(RelativePath.validate("a//b"), .emptyComponent)
        XCTAssertEqual(RelativePath.validate("a/"), .emptyComponent)
        XCTAssertEqual(RelativePath.validate("a\u{0}b"), .nul)
        XCTAssertEqual(RelativePath.validate(".syncd/trash/x"), .stateDirectory)
    }

    func test_relativePath_helpers() {
        XCTAssertEqual(RelativePath.parent(of: "a/b/c"), "a/b")
        XCTAssertEqual(RelativePath.parent(of: "c"), "")
        XCTAssertEqual(RelativePath.join("", "x"), "x")
        XCTAssertTrue(RelativePath.isWithin("a/b", "a"))
        XCTAssertTrue(RelativePath.isWithin("a", "a"))
        XCTAssertFalse(RelativePath.isWithin("ab", "a"))
        XCTAssertTrue(RelativePath.isWithin("anything", ""))
    }

    func test_metadata_looksUnchanged_shouldIgnoreDirectoryTimes() {
        let d1 = FileMetadata(kind: .directory, size: 0, mode: 0o755, mtimeNs: 1, ctimeNs: 1, inode: 5)
        var d2 = d1
        d2.mtimeNs = 9; d2.ctimeNs = 9
        XCTAssertTrue(d2.looksUnchanged(from: d1))
        let f1 = FileMetadata(kind: .file, size: 1, mode: 0o644, mtimeNs: 1, ctimeNs: 1, inode: 5)
        var f2 = f1
        f2.ctimeNs = 2
        XCTAssertFalse(f2.looksUnchanged(from: f1), "a file whose ctime moved may have new content")
    }
}
