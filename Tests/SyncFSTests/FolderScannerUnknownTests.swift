import SyncCore
@testable import SyncFS
import SyncSecurity
import XCTest

/// A wiped or replaced folder never becomes deletions: what a scan does with indexed paths it
/// cannot find when the folder's contents are unknown, or when most of the index is gone at once.
final class FolderScannerUnknownTests: XCTestCase {
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

    /// Runs a scan and applies its changes to `index` like the store would.
    @discardableResult
    private func scan(_ roots: [String] = [""], missing: MissingPaths = .deleteUnlessMost) throws -> (changes: [LocalChange], report: ScanReport) {
        var all: [LocalChange] = []
        let report = try scanner.scan(roots: roots, baseline: SnapshotBaseline(index), ignore: .empty, missing: missing) { batch in
            all += batch
            for c in batch {
                switch c {
                case .present(let p, let m, _): index[p] = IndexedState(metadata: m, deleted: false)
                case .removed(let p): index[p]?.deleted = true
                }
            }
        }
        return (all, report)
    }

    private func files(_ n: Int, in dir: String = "") {
        for i in 0..<n { fs.write(RelativePath.join(dir, "f\(i)"), Array("file \(i)".utf8)) }
    }

    private func removals(_ changes: [LocalChange]) -> [String] {
        changes.compactMap { if case .removed(let p) = $0 { p } else { nil } }
    }

    func test_unknownFolder_setsMissingPathsAside_andStillRecordsWhatIsPresent() throws {
        files(3)
        fs.write("d/x", [1])
        try scan()
        fs.delete("f1")
        fs.delete("d")
        fs.write("new", [9])
        let (changes, report) = try scan(missing: .setAside)
        XCTAssertEqual(removals(changes), [], "nothing is recorded as deleted")
        XCTAssertEqual(changes.map(\.path), ["new"], "what is on disk is recorded as usual")
        XCTAssertEqual(report.setAside, ["d/x", "f1", "d"], "missing paths are reported, children first")
        XCTAssertFalse(report.mostMissing)
    }

    func test_mostOfTheIndexMissingAtOnce_isSetAside_notDeleted() throws {
        files(25)
        try scan()
        for i in 0..<20 { fs.delete("f\(i)") }
        let (changes, report) = try scan()
        XCTAssertEqual(removals(changes), [])
        XCTAssertEqual(report.setAside.count, 20)
        XCTAssertTrue(report.mostMissing)
    }

    func test_aFewMissing_orLessThanHalf_areDeletionsAsBefore() throws {
        files(25)
        try scan()
        for i in 0..<12 { fs.delete("f\(i)") }   // 12 of 25: not more than half
        XCTAssertEqual(removals(try scan().changes).count, 12)

        index = [:]
        fs = FakeFileSystem()
        scanner = FolderScanner(fs: fs, hasher: scanner.hasher)
        files(9)
        try scan()
        for i in 0..<9 { fs.delete("f\(i)") }    // all of a small folder: a handful shrinks as asked
        XCTAssertEqual(removals(try scan().changes).count, 9)
    }

    func test_confirmedDeletions_areRecordedWhateverTheirNumber() throws {
        files(25)
        try scan()
        for i in 0..<20 { fs.delete("f\(i)") }
        let (changes, report) = try scan(missing: .delete)
        XCTAssertEqual(removals(changes).count, 20)
        XCTAssertEqual(report.setAside, [])
    }

    /// An inotify batch (a subtree scan) that finds most of the whole index gone trips it too.
    func test_subtreeScan_findingMostOfTheIndexGone_isSetAside() throws {
        files(20, in: "photos")
        files(4)
        try scan()
        fs.delete("photos")
        let (changes, report) = try scan(["photos"])
        XCTAssertEqual(removals(changes), [])
        XCTAssertEqual(report.setAside.count, 21)
        XCTAssertTrue(report.mostMissing)
    }
}
