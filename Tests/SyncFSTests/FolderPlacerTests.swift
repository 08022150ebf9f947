import SyncCore
import SyncReplication
import XCTest
@testable import SyncFS

/// FolderPlacer over the fake file system (the simulator runs it at scale; these pin single rules).
final class FolderPlacerTests: XCTestCase {
    func placer(_ fs: FakeFileSystem, trash: String = ".syncd/trash/1", policy: PlacementPolicy = .none) -> FolderPlacer {
        var n = 0
        return FolderPlacer(folder: fs, me: 1, maxConflictCopies: 10,
                            indexed: { path in (try fs.metadata(path)).map { ($0, false) } },
                            trashDirectory: { trash }, temporaryName: { n += 1; return ".syncd/tmp/l\(n)" },
                            flush: { try fs.synchronize("") }, policy: policy)
    }

    /// A folder's owner and modes (Docs/Operations.md, "Owners and modes") are set on the staged
    /// file before its rename, so the file never appears with the writer's owner or mode.
    func test_placementPolicy_ownsAndModesTheStagedFile_beforeItIsRenamedIntoPlace() throws {
        let fs = FakeFileSystem()
        let policy = PlacementPolicy(uid: 70, gid: 71, fileMode: 0o640, directoryMode: 0o750)
        var plain = entry("db/base/1", Array("page".utf8))
        plain.metadata.mode = 0o666
        var script = entry("db/hook", Array("#!/bin/sh".utf8))
        script.metadata.mode = 0o755
        let dir = FileEntry(path: "db", metadata: FileMetadata(kind: .directory, size: 0, mode: 0o777, mtimeNs: 1, ctimeNs: 1, inode: 0),
                            version: VersionVector([.init(device: 2, value: 1)]), sequence: 1)
        var link = entry("db/current", [])
        link.metadata = FileMetadata(kind: .symlink, size: 0, mode: 0o777, mtimeNs: 1, ctimeNs: 1, inode: 0, symlinkTarget: "base")
        let s1 = try stage(fs, "a", Array("page".utf8)), s2 = try stage(fs, "b", Array("#!/bin/sh".utf8))
        var seen: [FakeFileSystem.Operation] = []
        fs.beforeOperation = { seen.append($0) }
        let result = try placer(fs, policy: policy).place([.directory(dir), .file(plain, staged: s1), .file(script, staged: s2), .symlink(link)],
                                                          conflictsLocal: [:], syncEach: true)
        XCTAssertTrue(result.failed.isEmpty, "\(result.failed)")
        XCTAssertEqual(fs.snapshot()["db/base/1"]?.mode, 0o640, "the folder's file mode, not the writer's 0666")
        XCTAssertEqual(fs.snapshot()["db/hook"]?.mode, 0o750, "an executable keeps x where the policy grants r")
        XCTAssertEqual(fs.snapshot()["db"]?.mode, 0o750)
        for path in ["db", "db/base/1", "db/hook", "db/current"] {
            XCTAssertEqual(fs.owner(of: path).map { [$0.uid, $0.gid] }, [70, 71], path)
        }
        XCTAssertEqual(result.metadata["db/base/1"]?.mode, 0o640, "what is recorded is what was placed: no scan sees a local change")
        // Owner and mode come before the rename of each staged file.
        for staged in [s1, s2] {
            let owned = seen.firstIndex { if case .setOwner(staged, _, _) = $0 { true } else { false } }
            let moded = seen.firstIndex { if case .setMode(staged, _) = $0 { true } else { false } }
            let renamed = seen.firstIndex { if case .rename(staged, _, _) = $0 { true } else { false } }
            XCTAssertNotNil(renamed, staged)
            XCTAssertLessThan(try XCTUnwrap(owned, staged), try XCTUnwrap(renamed))
            XCTAssertLessThan(try XCTUnwrap(moded, staged), try XCTUnwrap(renamed))
        }
    }

    func test_noPlacementPolicy_keepsTheWritersModeAndChangesNoOwner() throws {
        let fs = FakeFileSystem()
        var plain = entry("f", Array("x".utf8))
        plain.metadata.mode = 0o604
        let staged = try stage(fs, "a", Array("x".utf8))
        try fs.setMode(staged, 0o604)   // as staging sets the writer's mode
        var seen: [FakeFileSystem.Operation.Kind] = []
        fs.beforeOperation = { seen.append($0.kind) }
        _ = try placer(fs).place([.file(plain, staged: staged)], conflictsLocal: [:], syncEach: true)
        XCTAssertEqual(fs.snapshot()["f"]?.mode, 0o604)
        XCTAssertFalse(seen.contains(.setOwner))
        XCTAssertEqual(PlacementPolicy(fileMode: 0o600).fileMode(for: 0o755), 0o700)
        XCTAssertEqual(PlacementPolicy(fileMode: 0o640).fileMode(for: 0o644), 0o640)
        XCTAssertEqual(PlacementPolicy.none.fileMode(for: 0o100755), 0o755)
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
