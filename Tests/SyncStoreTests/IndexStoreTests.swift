import SyncCore
import SyncStore
import XCTest

final class IndexStoreTests: XCTestCase {
    private let device: ShortDeviceID = 0xA1
    private var store: IndexStore!
    private var folder: FolderRecord!

    override func setUpWithError() throws {
        store = try IndexStore.inMemory()
        folder = try store.addFolder(path: "/data", folderID: "fid", access: "read-write", secret: "s", chunkerVersion: 1)
    }

    private func meta(_ kind: FileKind = .file, size: Int64 = 10, mtime: Int64 = 1, inode: UInt64 = 7) -> FileMetadata {
        FileMetadata(kind: kind, size: size, mode: 0o644, mtimeNs: mtime, ctimeNs: mtime, inode: inode)
    }

    private func chunk(_ n: UInt64, _ size: UInt32) -> ChunkRef {
        ChunkRef(id: ChunkID(w0: n, w1: 0, w2: 0, w3: n), size: size)
    }

    func test_addFolder_shouldRefuseSamePathOrSameFolderID() throws {
        XCTAssertThrowsError(try store.addFolder(path: "/data", folderID: "other", access: "read-write", secret: "s", chunkerVersion: 1)) {
            XCTAssertEqual($0 as? StoreError, .folderPathTaken("/data"))
        }
        XCTAssertThrowsError(try store.addFolder(path: "/elsewhere", folderID: "fid", access: "read-write", secret: "s", chunkerVersion: 1)) {
            XCTAssertEqual($0 as? StoreError, .folderIDTaken("/data"))
        }
        XCTAssertEqual(try store.folders().map(\.path), ["/data"])
    }

    func test_liveFiles_withInode_findsTheLiveNamesOfThatInodeInThatFolder() throws {
        let big: UInt64 = .max - 1   // stored by bit pattern, negative in SQLite
        try store.recordLocalChanges([
            .present(path: "orig", metadata: meta(inode: big), chunks: []),
            .present(path: "d/twin", metadata: meta(inode: big), chunks: []),
            .present(path: "gone", metadata: meta(inode: big), chunks: []),
            .present(path: "dir", metadata: meta(.directory, size: 0, inode: big), chunks: []),
            .present(path: "other", metadata: meta(inode: 41), chunks: []),
        ], folder: folder.id, device: device, now: 0)
        try store.recordLocalChanges([.removed(path: "gone")], folder: folder.id, device: device, now: 0)
        let second = try store.addFolder(path: "/data2", folderID: "fid2", access: "read-write", secret: "s", chunkerVersion: 1)
        try store.recordLocalChanges([.present(path: "x", metadata: meta(inode: big), chunks: [])], folder: second.id, device: device, now: 0)
        XCTAssertEqual(Set(try store.liveFiles(folder: folder.id, inode: big)), ["orig", "d/twin"])
        XCTAssertEqual(try store.liveFiles(folder: folder.id, inode: 41), ["other"])
        XCTAssertEqual(try store.liveFiles(folder: folder.id, inode: 42), [])
    }

    func test_pieces_areKeptByID_andPrunedToTheOnesInUse() throws {
        let p1 = chunk(1, 1).id, p2 = chunk(2, 1).id
        try store.storePieces([(p1, [1, 2, 3]), (p2, [4])], folder: folder.id)
        try store.storePieces([(p1, [1, 2, 3])], folder: folder.id)   // idempotent
        XCTAssertEqual(try store.pieces([p1, p2, chunk(3, 1).id], folder: folder.id), [p1: [1, 2, 3], p2: [4]])
        XCTAssertEqual(try store.prunePieces(keeping: [p2], folder: folder.id), 1)
        XCTAssertEqual(try store.pieces([p1, p2], folder: folder.id), [p2: [4]])

        // Only live files with long lists are listed for the pruner.
        let long = (0..<200).map { chunk(UInt64($0) + 10, 1) }
        try store.recordLocalChanges([
            .present(path: "big", metadata: meta(size: 200), chunks: long),
            .present(path: "small", metadata: meta(size: 10), chunks: [chunk(1, 10)]),
        ], folder: folder.id, device: device, now: 0)
        XCTAssertEqual(try store.chunkLists(folder: folder.id, longerThan: 128), [long])
        try store.recordLocalChanges([.removed(path: "big")], folder: folder.id, device: device, now: 0)
        XCTAssertEqual(try store.chunkLists(folder: folder.id, longerThan: 128), [])
    }

    func test_recordLocalChanges_shouldBumpSequenceAndVersionPerChange() throws {
        let seq = try store.recordLocalChanges([
            .present(path: "a", metadata: meta(size: 10), chunks: [chunk(1, 10)]),
            .present(path: "d", metadata: meta(.directory, size: 0), chunks: []),
        ], folder: folder.id, device: device, now: 0)
        XCTAssertEqual(seq, 2)
        let a = try XCTUnwrap(store.entry(folder: folder.id, path: "a"))
        XCTAssertEqual(a.sequence, 1)
        XCTAssertEqual(a.version.value(for: device), 1)
        XCTAssertEqual(a.chunks, [chunk(1, 10)])

        try store.recordLocalChanges([.present(path: "a", metadata: meta(size: 20, mtime: 2), chunks: [chunk(2, 20)])],
                                     folder: folder.id, device: device, now: 0)
        let a2 = try XCTUnwrap(store.entry(folder: folder.id, path: "a"))
        XCTAssertEqual(a2.sequence, 3)
        XCTAssertEqual(a2.version.value(for: device), 2)
        XCTAssertEqual(try store.locateChunk(chunk(2, 20).id)?.path, "a")
        XCTAssertNil(try store.locateChunk(chunk(1, 10).id), "replaced chunks leave the chunk map")
        XCTAssertEqual(try store.verify(folder: folder.id), [])
    }

    func test_recordLocalChanges_shouldNotVersionUnchangedContent() throws {
        try store.recordLocalChanges([.present(path: "a", metadata: meta(), chunks: [chunk(1, 10)])], folder: folder.id, device: device, now: 0)
        var touched = meta()
        touched.ctimeNs = 99
        touched.inode = 8
        let seq = try store.recordLocalChanges([.present(path: "a", metadata: touched, chunks: [chunk(1, 10)])],
                                               folder: folder.id, device: device, now: 0)
        XCTAssertEqual(seq, 1, "ctime/inode-only changes are not a new version")
        XCTAssertEqual(try store.scanState(folder: folder.id, path: "a")?.metadata.ctimeNs, 99, "but the stat cache is refreshed")
    }

    func test_removal_shouldLeaveTombstoneAndDropChunks() throws {
        try store.recordLocalChanges([.present(path: "a", metadata: meta(), chunks: [chunk(1, 10)])], folder: folder.id, device: device, now: 0)
        let seq = try store.recordLocalChanges([.removed(path: "a"), .removed(path: "never-existed")], folder: folder.id, device: device, now: 0)
        XCTAssertEqual(seq, 2, "removing an unknown path is not a change")
        let a = try XCTUnwrap(store.entry(folder: folder.id, path: "a"))
        XCTAssertTrue(a.deleted)
        XCTAssertEqual(a.version.value(for: device), 2)
        XCTAssertNil(try store.locateChunk(chunk(1, 10).id))
        XCTAssertEqual(try store.recordLocalChanges([.removed(path: "a")], folder: folder.id, device: device, now: 0), 2, "already deleted")
        XCTAssertEqual(try store.stats(folder: folder.id), FolderStats(files: 0, directories: 0, symlinks: 0, bytes: 0, deleted: 1, sequence: 2))
    }

    func test_entriesAfter_shouldReturnOnlyNewerInSequenceOrder() throws {
        for i in 0..<5 {
            try store.recordLocalChanges([.present(path: "f\(i)", metadata: meta(size: 1), chunks: [chunk(UInt64(i), 1)])],
                                         folder: folder.id, device: device, now: 0)
        }
        XCTAssertEqual(try store.entries(folder: folder.id, after: 3).map(\.path), ["f3", "f4"])
        XCTAssertEqual(try store.entries(folder: folder.id, after: 0, limit: 2).map(\.sequence), [1, 2])
    }

    func test_livePaths_shouldSelectSubtreeOnly() throws {
        try store.recordLocalChanges(["d", "d/x", "d/y/z", "d0", "dd", "e"].map {
            .present(path: $0, metadata: meta(size: 0), chunks: [])
        }, folder: folder.id, device: device, now: 0)
        try store.recordLocalChanges([.removed(path: "d/x")], folder: folder.id, device: device, now: 0)
        XCTAssertEqual(Set(try store.livePaths(folder: folder.id, under: "d")), ["d", "d/y/z"])
        XCTAssertEqual(try store.livePaths(folder: folder.id, under: "").count, 5)
    }

    func test_stats_shouldCountKindsAndBytes() throws {
        try store.recordLocalChanges([
            .present(path: "a", metadata: meta(size: 10), chunks: [chunk(1, 10)]),
            .present(path: "b", metadata: meta(size: 5), chunks: [chunk(2, 5)]),
            .present(path: "d", metadata: meta(.directory, size: 0), chunks: []),
            .present(path: "l", metadata: FileMetadata(kind: .symlink, size: 1, mode: 0o777, mtimeNs: 1, ctimeNs: 1, inode: 3, symlinkTarget: "a"), chunks: []),
        ], folder: folder.id, device: device, now: 0)
        let s = try store.stats(folder: folder.id)
        XCTAssertEqual(s.files, 2)
        XCTAssertEqual(s.directories, 1)
        XCTAssertEqual(s.symlinks, 1)
        XCTAssertEqual(s.bytes, 15)
        XCTAssertEqual(try store.entry(folder: folder.id, path: "l")?.metadata.symlinkTarget, "a")
    }

    func test_removeFolder_shouldForgetItsIndex() throws {
        try store.recordLocalChanges([.present(path: "a", metadata: meta(), chunks: [chunk(1, 10)])], folder: folder.id, device: device, now: 0)
        try store.removeFolder(id: folder.id)
        XCTAssertEqual(try store.folders(), [])
        XCTAssertNil(try store.locateChunk(chunk(1, 10).id))
        _ = try store.addFolder(path: "/data", folderID: "fid", access: "read-write", secret: "s", chunkerVersion: 1)
    }

    func test_onDisk_shouldUseWALAndSurviveReopen() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("idx-\(UUID())").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        do {
            let s = try IndexStore(path: dir + "/index.db")
            let f = try s.addFolder(path: "/x", folderID: "x", access: "read-write", secret: "s", chunkerVersion: 1)
            try s.recordLocalChanges([.present(path: "a", metadata: meta(), chunks: [chunk(1, 10)])], folder: f.id, device: device, now: 0)
            XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/index.db-wal"), "WAL journal while open")
        }
        let reopened = try IndexStore(path: dir + "/index.db")
        XCTAssertEqual(try reopened.folders().first?.sequence, 1)
    }
}
