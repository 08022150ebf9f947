import SyncCore
@testable import SyncFS
import SyncSecurity
import XCTest

final class FolderScannerTests: XCTestCase {
    private var fs: FakeFileSystem!
    private var scanner: FolderScanner!
    private var index: [String: IndexedState] = [:]

    override func setUp() {
        fs = FakeFileSystem()
        let hasher = FileHasher(chunker: FastCDC(gear: FastCDC.testGear(seed: 1)), ids: ChunkHasher(key: Array(repeating: 7, count: 32)),
                                bufferSize: 1 << 20)
        scanner = FolderScanner(fs: fs, hasher: hasher)
        index = [:]
    }

    /// Runs a scan and applies its changes to `index` like the store would; returns the changes.
    @discardableResult
    private func scan(_ roots: [String] = [""], ignore: IgnoreRules = .empty) throws -> [LocalChange] {
        var all: [LocalChange] = []
        _ = try scanner.scan(roots: roots, baseline: SnapshotBaseline(index), ignore: ignore) { batch in
            all += batch
            for c in batch {
                switch c {
                case .present(let p, let m, _): index[p] = IndexedState(metadata: m, deleted: false)
                case .removed(let p): index[p]?.deleted = true
                }
            }
        }
        return all
    }

    private func random(_ n: Int, seed: UInt64) -> [UInt8] {
        var x = seed
        return (0..<n).map { _ in x ^= x << 13; x ^= x >> 7; x ^= x << 17; return UInt8(truncatingIfNeeded: x) }
    }

    func test_initialScan_shouldIndexFilesDirectoriesAndSymlinks() throws {
        fs.write("a.txt", Array("hello".utf8))
        fs.write("dir/sub/b.bin", random(300_000, seed: 3), mode: 0o600)
        fs.mkdir("empty")
        fs.symlink("link", target: "../outside")
        let changes = try scan()
        XCTAssertEqual(Set(changes.map(\.path)), ["a.txt", "dir", "dir/sub", "dir/sub/b.bin", "empty", "link"])
        guard case .present(_, let m, let chunks)? = changes.first(where: { $0.path == "dir/sub/b.bin" }) else { return XCTFail() }
        XCTAssertEqual(m.mode, 0o600)
        XCTAssertEqual(chunks.reduce(0) { $0 + Int($1.size) }, 300_000)
        XCTAssertGreaterThan(chunks.count, 1)
        guard case .present(_, let lm, let lc)? = changes.first(where: { $0.path == "link" }) else { return XCTFail() }
        XCTAssertEqual(lm.symlinkTarget, "../outside", "symlinks are recorded, never followed")
        XCTAssertEqual(lc, [])
    }

    func test_rename_isOneBatch_soPeersSeeBothHalvesTogether() throws {
        fs.write("old.bin", random(100_000, seed: 9))
        try scan()
        fs.rename("old.bin", "new.bin")
        var batches: [[LocalChange]] = []
        _ = try scanner.scan(roots: ["old.bin", "new.bin"], baseline: SnapshotBaseline(index), ignore: .empty) { batches.append($0) }
        XCTAssertEqual(batches.count, 1)
        XCTAssertEqual(batches.first?.map(\.path), ["new.bin", "old.bin"])

        // Also when the renamed file alone fills a batch's byte budget.
        scanner.options.batchBytes = 1000
        fs.rename("new.bin", "newer.bin")
        batches = []
        _ = try scanner.scan(roots: ["new.bin", "newer.bin"], baseline: SnapshotBaseline(index.merging(["new.bin": index["old.bin"]!]) { $1 }),
                             ignore: .empty) { batches.append($0) }
        XCTAssertEqual(batches.map { $0.map(\.path) }, [["newer.bin", "new.bin"]])
        scanner.options.batchBytes = 256 << 20
    }

    func test_batchBytes_cutsBeforeTheFileThatWouldExceedIt() throws {
        scanner.options.batchBytes = 150_000
        for i in 0..<4 { fs.write("f\(i)", random(100_000, seed: UInt64(i + 1))) }
        var batches: [[LocalChange]] = []
        _ = try scanner.scan(roots: [""], baseline: SnapshotBaseline([:]), ignore: .empty) { batches.append($0) }
        XCTAssertEqual(batches.map(\.count), [1, 1, 1, 1], "100 KB files under a 150 KB budget: one per batch")
    }

    func test_rescan_shouldReportNothingWhenUnchanged() throws {
        fs.write("a", [1, 2, 3])
        fs.write("d/b", [4])
        try scan()
        XCTAssertEqual(try scan(), [])
    }

    func test_rescan_shouldRehashOnlyWhatChanged() throws {
        fs.write("a", [1])
        fs.write("b", [2])
        try scan()
        fs.write("b", [2, 2])
        var hashed = 0
        let report = try scanner.scan(roots: [""], baseline: SnapshotBaseline(index), ignore: .empty) { _ in }
        hashed = report.hashedFiles
        XCTAssertEqual(hashed, 1)
        XCTAssertEqual(report.changes, 1)
    }

    func test_rescan_shouldFindDeletionsChildrenFirst() throws {
        fs.write("keep", [1])
        fs.write("gone/x/y", [2])
        try scan()
        fs.delete("gone")
        let changes = try scan()
        XCTAssertEqual(changes, [.removed(path: "gone/x/y"), .removed(path: "gone/x"), .removed(path: "gone")])
    }

    /// inotify reports only the name written through; the file's other names changed as much.
    func test_changeThroughOneHardLink_incrementalScanOfThatName_findsEveryNameChanged() throws {
        fs.write("orig", Array("v1".utf8))
        fs.link("orig", "elsewhere/twin")
        fs.write("plain", [9])
        try scan()
        XCTAssertEqual(index["elsewhere/twin"]?.metadata.inode, index["orig"]?.metadata.inode)
        fs.write("orig", Array("v1 and v2".utf8))   // in place: the inode keeps both names
        let changes = try scan(["orig"])
        XCTAssertEqual(Set(changes.map(\.path)), ["orig", "elsewhere/twin"])
        guard case .present(_, let m, let chunks)? = changes.first(where: { $0.path == "elsewhere/twin" }) else { return XCTFail() }
        XCTAssertEqual(m.size, 9)
        XCTAssertEqual(chunks.reduce(0) { $0 + Int($1.size) }, 9)
        XCTAssertEqual(try scan(), [], "a full rescan finds nothing the incremental scan missed")
    }

    func test_changeThroughOneHardLink_skipsTheOtherNamesThatAreIgnoredOrUnchanged() throws {
        fs.write("orig", [1])
        fs.link("orig", "build/twin")
        try scan()
        fs.write("orig", [1, 2])
        let rules = IgnoreRules(parsing: "build/\n")
        XCTAssertEqual(try scan(["orig"], ignore: rules).map(\.path), ["orig"], "an ignored name stays as it was")
        // The twin is removed and its name reused by an unrelated file: nothing links them any more.
        fs.delete("build/twin")
        fs.write("orig", [1, 2, 3])
        fs.write("build/twin", [7])
        XCTAssertEqual(try scan(["orig"]).map(\.path), ["orig"])
    }

    func test_modeChange_shouldBeAChange() throws {
        fs.write("a", [1])
        try scan()
        fs.chmod("a", 0o755)
        let changes = try scan()
        guard case .present(_, let m, _)? = changes.first else { return XCTFail("expected a change") }
        XCTAssertEqual(m.mode, 0o755)
    }

    func test_ignoreRulesAndStateDir_shouldBeSkipped() throws {
        fs.write(".syncd/tmp/partial", [1])
        fs.write("build/out.o", [1])
        fs.write("src/main.c", [1])
        fs.write("src/main.o", [1])
        let rules = IgnoreRules(parsing: "build/\n*.o\n")
        let changes = try scan(ignore: rules)
        XCTAssertEqual(Set(changes.map(\.path)), ["src", "src/main.c"])
    }

    func test_namesThatDifferOnlyByNormalization_areTwoPaths() throws {
        let nfc = "d%E9/caf%C3%A9", nfd = "d%E9/cafe%CC%81"   // café in NFC and NFD, in a Latin-1 "dé"
        fs.write(nfc, [1])
        fs.write(nfd, [2])
        fs.symlink("link", target: "d%E9/cafe%CC%81")
        let changes = try scan()
        XCTAssertEqual(Set(changes.map(\.path)), ["d%E9", nfc, nfd, "link"])
        guard case .present(_, let lm, _)? = changes.first(where: { $0.path == "link" }) else { return XCTFail() }
        XCTAssertEqual(lm.symlinkTarget, "d%E9/cafe%CC%81")
        XCTAssertEqual(lm.size, 9, "a link's size is its target's bytes")
        XCTAssertEqual(try scan(), [])
        fs.delete(nfd)
        XCTAssertEqual(try scan(), [.removed(path: nfd)], "the twin that stays is not mistaken for the one removed")
        XCTAssertEqual(try scan(ignore: IgnoreRules(parsing: "caf\u{E9}\n")), [], "ignored by its own bytes, not removed")
        fs.write(nfd, [3])
        XCTAssertEqual(try scan(ignore: IgnoreRules(parsing: "caf\u{E9}\n")).map(\.path), [nfd], "the NFD name is not ignored")
    }

    func test_newlyIgnoredPath_shouldNotBeAnnouncedAsDeleted() throws {
        fs.write("cache/x", [1])
        try scan()
        XCTAssertEqual(try scan(ignore: IgnoreRules(parsing: "cache/\n")), [])
    }

    func test_subtreeScan_shouldOnlyLookAtItsRoots() throws {
        fs.write("a/1", [1])
        fs.write("b/1", [1])
        try scan()
        fs.write("a/2", [2])
        fs.write("b/2", [2])
        let changes = try scan(["a"])
        XCTAssertEqual(changes.map(\.path), ["a/2"])
        fs.delete("a")
        XCTAssertEqual(Set(try scan(["a"]).map(\.path)), ["a", "a/1", "a/2"])
    }

    func test_fileChangingWhileHashed_shouldBeRetriedNotIndexedTorn() throws {
        fs.write("busy", random(1000, seed: 1))
        var writes = 0
        fs.onRead = { [fs] path in
            if path == "busy" && writes < 2 { writes += 1; fs!.write("busy", self.random(2000 + writes, seed: 9)) }
        }
        let changes = try scan()
        guard case .present(_, let m, let chunks)? = changes.first else { return XCTFail("expected the file once stable") }
        XCTAssertEqual(m.size, 2002)
        XCTAssertEqual(chunks.reduce(0) { $0 + Int($1.size) }, 2002, "chunks describe the final content")
    }

    func test_fileThatNeverSettles_shouldBeReportedUnstable() throws {
        fs.write("hot", [1])
        fs.onRead = { [fs] path in if path == "hot" { fs!.write("hot", [UInt8](repeating: 2, count: Int.random(in: 2...50))) } }
        let report = try scanner.scan(roots: [""], baseline: SnapshotBaseline([:]), ignore: .empty) { batch in
            XCTAssertFalse(batch.contains { $0.path == "hot" })
        }
        XCTAssertEqual(report.unstable, ["hot"])
    }

    func test_missingRoot_shouldFailInsteadOfDeletingEverything() throws {
        fs.write("a", [1])
        try scan()
        fs.delete("")
        XCTAssertThrowsError(try scan()) { XCTAssertEqual($0 as? ScanError, .rootUnavailable("missing or not a directory")) }
    }

    func test_identicalContent_shouldGiveIdenticalChunkIDs() throws {
        let data = random(200_000, seed: 5)
        fs.write("one", data)
        fs.write("moved/two", data)
        let changes = try scan()
        let lists = changes.compactMap { c -> [ChunkRef]? in if case .present(_, let m, let ch) = c, m.kind == .file { return ch }; return nil }
        XCTAssertEqual(lists.count, 2)
        XCTAssertEqual(lists[0], lists[1])
    }

    func test_largeFile_shouldStreamThroughPipelineLikeInlineHashing() throws {
        // 5 MiB through 1 MiB buffers exercises carry-over between buffers.
        let data = random(5 << 20, seed: 11)
        fs.write("big", data)
        let changes = try scan()
        guard case .present(_, _, let chunks)? = changes.first else { return XCTFail() }
        let cdc = FastCDC(gear: FastCDC.testGear(seed: 1))
        XCTAssertEqual(chunks.map { Int($0.size) }, cdc.chunkLengths(of: data))
        let ids = ChunkHasher(key: Array(repeating: 7, count: 32))
        var offset = 0
        for c in chunks {
            XCTAssertEqual(c.id, ids.chunkID(Array(data[offset..<offset + Int(c.size)])))
            offset += Int(c.size)
        }
    }
}

final class SnapshotBaselineTests: XCTestCase {
    func test_livePaths_findsExactlyTheSubtree() {
        func state(_ deleted: Bool = false) -> IndexedState {
            IndexedState(metadata: FileMetadata(kind: .file, size: 1, mode: 0o644, mtimeNs: 0, ctimeNs: 0, inode: 0), deleted: deleted)
        }
        let paths = ["d", "d/a", "d/b/c", "d.txt", "d-x/y", "dd/e", "d/gone", "%C3%A9/f", "%C3%A9"]
        var states: [String: IndexedState] = [:]
        for p in paths { states[p] = state(p == "d/gone") }
        let b = SnapshotBaseline(states)
        XCTAssertEqual(Set(b.livePaths(under: "d")), ["d", "d/a", "d/b/c"])
        XCTAssertEqual(Set(b.livePaths(under: "d/b")), ["d/b/c"], "a directory the index does not hold itself")
        XCTAssertEqual(b.livePaths(under: "d.txt"), ["d.txt"], "a file is its own subtree")
        XCTAssertEqual(b.livePaths(under: "d/gone"), [], "deleted paths are not live")
        XCTAssertEqual(Set(b.livePaths(under: "%C3%A9")), ["%C3%A9", "%C3%A9/f"])
        XCTAssertEqual(b.livePaths(under: "").count, 8)
        XCTAssertEqual(b.livePaths(under: "nothing"), [])
        // The same answers as the plain definition, for every path as a root.
        for root in paths + ["", "d/b", "x"] {
            let plain = states.filter { !$0.value.deleted && RelativePath.isWithin($0.key, root) }.map(\.key)
            XCTAssertEqual(Set(b.livePaths(under: root)), Set(plain), root)
        }
    }

    func test_minimalRoots_dropsRootsInsideOthers() {
        XCTAssertEqual(Set(FolderScanner.minimalRoots(["a/b", "a", "a/b/c", "ab", "c/d", "c/d.e", "c/d/f"])), ["a", "ab", "c/d", "c/d.e"])
        XCTAssertEqual(FolderScanner.minimalRoots(["x", "", "y/z"]), [""])
        XCTAssertEqual(FolderScanner.minimalRoots([]), [])
    }
}
