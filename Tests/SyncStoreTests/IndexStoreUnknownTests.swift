import Foundation
import SyncCore
import SyncStore
import XCTest

/// Set-aside entries (v6-unknown), accepting deletions, and a damaged index.
final class IndexStoreUnknownTests: XCTestCase {
    private let device: ShortDeviceID = 0xA1
    private var store: IndexStore!
    private var folder: FolderRecord!

    override func setUpWithError() throws {
        store = try IndexStore.inMemory()
        folder = try store.addFolder(path: "/data", folderID: "fid", access: "read-write", secret: "s", chunkerVersion: 1)
    }

    private func meta(size: Int64 = 10, mtime: Int64 = 1) -> FileMetadata {
        FileMetadata(kind: .file, size: size, mode: 0o644, mtimeNs: mtime, ctimeNs: mtime, inode: 7)
    }

    private let chunk = ChunkRef(id: ChunkID(w0: 1, w1: 0, w2: 0, w3: 1), size: 10)

    func test_setAside_leavesTheIndexWithoutAnyTombstoneOrNewSequence() throws {
        try store.recordLocalChanges([.present(path: "a", metadata: meta(), chunks: [chunk]),
                                      .present(path: "b", metadata: meta(), chunks: [chunk])], folder: folder.id, device: device)
        let before = try store.sequence(folder: folder.id)
        XCTAssertEqual(try store.setAside(["a", "nothing-here"], folder: folder.id), 1)
        XCTAssertNil(try store.entry(folder: folder.id, path: "a"), "out of the index: neither live nor deleted")
        XCTAssertEqual(try store.sequence(folder: folder.id), before, "nothing to announce")
        XCTAssertEqual(try store.entries(folder: folder.id, after: 0).map(\.path), ["b"])
        XCTAssertEqual(try store.missingEntries(folder: folder.id).map(\.path), ["a"])
        XCTAssertEqual(try store.missingEntries(folder: folder.id).first?.chunks, [chunk])
        XCTAssertEqual(try store.locateChunks([chunk.id], folder: folder.id)[chunk.id]?.path, "b", "a's chunks are not served")
    }

    func test_aSetAsidePathThatComesBack_keepsItsHistory() throws {
        try store.recordLocalChanges([.present(path: "same", metadata: meta(), chunks: [chunk]),
                                      .present(path: "edited", metadata: meta(), chunks: [chunk])], folder: folder.id, device: device)
        let had = try XCTUnwrap(store.entry(folder: folder.id, path: "same")).version
        try store.setAside(["same", "edited"], folder: folder.id)
        try store.recordLocalChanges([.present(path: "same", metadata: meta(), chunks: [chunk]),
                                      .present(path: "edited", metadata: meta(size: 10, mtime: 2), chunks: [chunk])],
                                     folder: folder.id, device: device)
        XCTAssertEqual(try store.entry(folder: folder.id, path: "same")?.version, had, "the same content is no new version")
        XCTAssertEqual(try store.entry(folder: folder.id, path: "edited")?.version.compare(had), .greater, "an edit follows the old version")
        XCTAssertEqual(try store.missingCount(folder: folder.id), 0)
    }

    func test_aPeersVersionSettlesASetAsidePath() throws {
        try store.recordLocalChanges([.present(path: "a", metadata: meta(), chunks: [chunk])], folder: folder.id, device: device)
        let entry = try XCTUnwrap(store.entry(folder: folder.id, path: "a"))
        try store.setAside(["a"], folder: folder.id)
        try store.recordRemoteEntries([(entry, entry.metadata)], folder: folder.id)
        XCTAssertEqual(try store.missingCount(folder: folder.id), 0)
    }

    func test_acceptMissingAsDeleted_recordsTombstonesFollowingTheOldVersion_andLeavesUnknown() throws {
        try store.recordLocalChanges([.present(path: "gone", metadata: meta(), chunks: [chunk]),
                                      .present(path: "back", metadata: meta(), chunks: [chunk])], folder: folder.id, device: device)
        let had = try XCTUnwrap(store.entry(folder: folder.id, path: "gone")).version
        try store.setContentsUnknown(true, folder: folder.id)
        try store.setAside(["gone", "back"], folder: folder.id)
        let before = try store.sequence(folder: folder.id)
        XCTAssertEqual(try store.acceptMissingAsDeleted(folder: folder.id, device: device) { $0 != "back" }, 1)
        let gone = try XCTUnwrap(store.entry(folder: folder.id, path: "gone"))
        XCTAssertTrue(gone.deleted)
        XCTAssertEqual(gone.version.compare(had), .greater, "the tombstone follows the old version")
        XCTAssertEqual(gone.version.counters.map(\.device), had.counters.map(\.device))
        XCTAssertEqual(try store.sequence(folder: folder.id), before + 1)
        XCTAssertEqual(try store.missingEntries(folder: folder.id).map(\.path), ["back"], "a path back on disk is left to the next scan")
        XCTAssertFalse(try store.contentsUnknown(folder: folder.id))
    }

    func test_damagedIndex_isRefusedByName_andLeftUntouched() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let garbage = Data((0..<8192).map { UInt8(truncatingIfNeeded: $0 * 31 + 7) })
        try garbage.write(to: URL(fileURLWithPath: dir + "/index.db"))
        XCTAssertThrowsError(try IndexStore(path: dir + "/index.db")) { error in
            guard case .damaged(let path, _)? = error as? StoreError else { return XCTFail("\(error)") }
            XCTAssertEqual(path, dir + "/index.db")
            XCTAssertTrue("\(error)".contains("syncd daemon --rebuild-index"), "\(error)")
        }
        XCTAssertEqual(FileManager.default.contents(atPath: dir + "/index.db"), garbage)
    }

    func test_rebuild_keepsTheOldFileAside_andReaddsItsFoldersWithUnknownContents() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let s = try IndexStore(path: dir + "/index.db")
            _ = try s.addFolder(path: "/x", folderID: "x", access: "read-write", secret: "good", chunkerVersion: 1)
            _ = try s.addFolder(path: "/y", folderID: "y", access: "read-write", secret: "bad", chunkerVersion: 1)
        }
        let (rebuilt, report) = try IndexStore.rebuild(at: dir + "/index.db") { $0 == "good" }
        XCTAssertEqual(report.folders, ["/x"])
        XCTAssertEqual(report.skipped.count, 1)
        XCTAssertNil(report.unreadable)
        XCTAssertTrue(report.keptAs?.contains("index.db.replaced-") ?? false, "\(String(describing: report.keptAs))")
        let x = try XCTUnwrap(rebuilt.folders().first)
        XCTAssertTrue(try rebuilt.contentsUnknown(folder: x.id))

        // A garbage file: kept as .damaged-, its folders cannot be read.
        let garbage = Data(repeating: 0x5A, count: 4096)
        try garbage.write(to: URL(fileURLWithPath: dir + "/other.db"))
        let (_, damaged) = try IndexStore.rebuild(at: dir + "/other.db") { _ in true }
        XCTAssertTrue(damaged.keptAs?.contains("other.db.damaged-") ?? false)
        XCTAssertNotNil(damaged.unreadable)
        XCTAssertEqual(FileManager.default.contents(atPath: try XCTUnwrap(damaged.keptAs)), garbage)
    }

    /// Damage past the folder table (the file table's pages): refused, yet the folders come back.
    func test_rebuild_ofAPartlyDamagedIndex_readdsTheFoldersItCanStillRead() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/index.db"
        do {
            let s = try IndexStore(path: path)
            let f = try s.addFolder(path: "/x", folderID: "x", access: "read-write", secret: "good", chunkerVersion: 1)
            try s.recordLocalChanges((0..<500).map { .present(path: "file-\($0)", metadata: meta(), chunks: [chunk]) },
                                     folder: f.id, device: device)
        }
        try Self.garble(path, lastPages: 3)
        XCTAssertThrowsError(try IndexStore(path: path)) { XCTAssertTrue("\($0)".contains("damaged"), "\($0)") }
        let (rebuilt, report) = try IndexStore.rebuild(at: path) { _ in true }
        XCTAssertTrue(report.keptAs?.contains(".damaged-") ?? false)
        XCTAssertEqual(report.folders, ["/x"], "\(String(describing: report.unreadable))")
        XCTAssertEqual(try rebuilt.folders().map(\.secret), ["good"])
    }

    /// Overwrites the last `lastPages` 4 KiB pages of a (checkpointed) database with garbage.
    static func garble(_ path: String, lastPages: Int) throws {
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: path))
        let size = handle.seekToEndOfFile()
        handle.seek(toFileOffset: size - UInt64(lastPages * 4096))
        handle.write(Data((0..<(lastPages * 4096)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 17) }))
        handle.closeFile()
    }
}
