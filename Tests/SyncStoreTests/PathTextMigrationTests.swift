import Foundation
import SyncCore
@testable import SyncStore
import XCTest

/// Migration v5: paths stored before names were bytes (raw UTF-8) become path text.
final class PathTextMigrationTests: XCTestCase {
    private var directory: String!

    override func setUpWithError() throws {
        directory = NSTemporaryDirectory() + "index-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    }

    override func tearDownWithError() throws {
        try? FileManager.default.removeItem(atPath: directory)
    }

    private func meta(_ kind: FileKind = .file, target: String? = nil) -> FileMetadata {
        FileMetadata(kind: kind, size: kind == .file ? 1 : 0, mode: 0o644, mtimeNs: 1, ctimeNs: 1, inode: 7, symlinkTarget: target)
    }

    func test_v5_rewritesStoredPathsAndLinkTargetsAsPathText() throws {
        let path = directory + "/index.db"
        let chunk = ChunkRef(id: ChunkID(w0: 1, w1: 2, w2: 3, w3: 4), size: 1)
        // As v4 left them: what String(cString:) made of each name, stored as UTF-8.
        let old = try IndexStore(path: path, migratingUpTo: "v4")
        let folder = try old.addFolder(path: "/srv/dossier-caf\u{E9}", folderID: "fid", access: "read-write", secret: "s",
                                       chunkerVersion: 1)
        try old.recordLocalChanges([
            .present(path: "d\u{E9}", metadata: meta(.directory), chunks: []),
            .present(path: "d\u{E9}/caf\u{E9}", metadata: meta(), chunks: [chunk]),
            .present(path: "cafe\u{301}", metadata: meta(), chunks: [chunk]),
            // "a%b" becomes "a%25b", a name that is already there and becomes "a%2525b".
            .present(path: "a%b", metadata: meta(), chunks: [chunk]),
            .present(path: "a%25b", metadata: meta(), chunks: [chunk]),
            .present(path: "plain", metadata: meta(), chunks: [chunk]),
            .present(path: "link", metadata: meta(.symlink, target: "d\u{E9}/caf\u{E9}"), chunks: []),
        ], folder: folder.id, device: 1)
        let before = try old.entries(folder: folder.id, after: 0)

        let store = try IndexStore(path: path)
        XCTAssertEqual(try store.folders().map(\.path), ["/srv/dossier-caf\u{E9}"], "the folder root is not a relative path")
        let after = try store.entries(folder: folder.id, after: 0)
        XCTAssertEqual(Set(after.map(\.path)), ["d%C3%A9", "d%C3%A9/caf%C3%A9", "cafe%CC%81", "a%25b", "a%2525b", "plain", "link"])
        XCTAssertEqual(try store.entry(folder: folder.id, path: "link")?.metadata.symlinkTarget, "d%C3%A9/caf%C3%A9")
        XCTAssertEqual(try store.entry(folder: folder.id, path: "a%25b")?.sequence,
                       before.first { $0.path == "a%b" }?.sequence, "rows keep their identity: the name moved, not the entry")
        XCTAssertEqual(try store.locateChunk(chunk.id, folder: folder.id).map { RelativePath.isText($0.path) }, true,
                       "the chunk map still points at the rewritten rows")
        XCTAssertEqual(try store.verify(folder: folder.id), [])
        XCTAssertEqual(try store.livePaths(folder: folder.id, under: "d%C3%A9").sorted(), ["d%C3%A9", "d%C3%A9/caf%C3%A9"])
    }
}
