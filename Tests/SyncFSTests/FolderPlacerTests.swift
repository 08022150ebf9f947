import SyncCore
import SyncReplication
import XCTest
@testable import SyncFS

/// FolderPlacer over the fake file system (the simulator runs it at scale; these pin single rules).
final class FolderPlacerTests: XCTestCase {
    func placer(_ fs: FakeFileSystem, trash: String = ".syncd/trash/1") -> FolderPlacer {
        var n = 0
        return FolderPlacer(folder: fs, me: 1, maxConflictCopies: 10,
                            indexed: { path in (try fs.metadata(path)).map { ($0, false) } },
                            trashDirectory: { trash }, temporaryName: { n += 1; return ".syncd/tmp/l\(n)" },
                            flush: { try fs.synchronize("") })
    }

    func entry(_ path: String, _ content: [UInt8]) -> FileEntry {
        FileEntry(path: path, metadata: FileMetadata(kind: .file, size: Int64(content.count), mode: 0o644, mtimeNs: 1, ctimeNs: 1, inode: 0),
                  version: VersionVector([.init(device: 2, value: 1)]), sequence: 1)
    }

    func stage(_ fs: FakeFileSystem, _ name: String, _ content: [UInt8]) throws -> String {
        let w = try fs.createFile(".syncd/tmp/" + name, mode: 0o644)
        try content.withUnsafeBytes { try w.write($0, at: 0) }
        try w.synchronize(); w.close()
        return ".syncd/tmp/" + name
    }

    func test_theSameConflictResolvedTwice_keepsOneCopy() throws {
        let fs = FakeFileSystem()
        fs.write("s.txt", Array("ours".utf8))
        let loser = entry("s.txt", Array("theirs".utf8))
        for round in 0..<2 {
            let staged = try stage(fs, "c\(round)", Array("theirs".utf8))
            let result = try placer(fs).place([.conflictCopy(loser, staged: staged, name: "s.sync-conflict-x.txt")],
                                              conflictsLocal: [:], syncEach: true)
            XCTAssertTrue(result.failed.isEmpty)
        }
        let names = try fs.list("").filter { $0.hasPrefix("s.") }.sorted()
        XCTAssertEqual(names, ["s.sync-conflict-x.txt", "s.txt"], "no \"s.sync-conflict-x 2.txt\"")
        XCTAssertEqual(try fs.list(".syncd/tmp"), [], "the second staged copy is dropped")
    }

    func test_aDeletionsTrashDirectory_survivesACrash() throws {
        let fs = FakeFileSystem()
        fs.write("d/x", Array("keep me".utf8))
        try fs.synchronize("")
        var gone = entry("d/x", [])
        gone.deleted = true
        _ = try placer(fs).place([.delete(gone)], conflictsLocal: [:], syncEach: true)
        fs.crash()
        XCTAssertNil(try fs.metadata("d/x"))
        XCTAssertEqual(try fs.readSmallFile(".syncd/trash/1/d/x"), Array("keep me".utf8),
                       "every directory up to the folder was flushed: the trash made by this batch is durable")
    }
}
