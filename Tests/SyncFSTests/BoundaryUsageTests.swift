import Foundation
import XCTest

/// The folder boundary holds only if the code that acts for peers has no way around it: the
/// replication sources may touch a folder through `POSIXFileSystem` (`folder.…`) alone — no
/// path-based system call, no FileManager. ConfinementTests prove the API; this proves it is
/// the only way in.
final class BoundaryUsageTests: XCTestCase {
    /// Every file of the replication shell: FolderExchange.swift and its extensions, the applier,
    /// the chunk pull, and the bench that serves peers.
    static func guarded(in daemon: URL) throws -> [String] {
        try FileManager.default.contentsOfDirectory(atPath: daemon.path).filter {
            $0.hasPrefix("FolderExchange") || ["FolderApplier.swift", "ChunkPull.swift", "PeerLink.swift", "PeerBench.swift"].contains($0)
        }.sorted()
    }

    /// Calls that take a path and would follow symlinks in it (or bypass the boundary some other way).
    static let forbidden = ["FileManager", "rename(", "renameat", "unlink(", "unlinkat", "rmdir(", "mkdir(", "mkdirat",
                            "chmod(", "fchmodat", "lstat(", "stat(", "symlink(", "symlinkat", "link(", "linkat",
                            "truncate(", "utimes(", "utimensat", "futimens", "pwrite(", "opendir(", "readlink(", "fopen("]

    func test_replicationSources_touchFoldersOnlyThroughTheConfinedFileSystem() throws {
        let daemon = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("Sources/SyncDaemon")
        var checked = 0
        let guarded = try Self.guarded(in: daemon)
        for name in guarded {
            let text = try String(contentsOf: daemon.appendingPathComponent(name), encoding: .utf8)
            for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
                let code = line.split(separator: "//", maxSplits: 1, omittingEmptySubsequences: false).first.map(String.init) ?? ""
                for call in Self.forbidden {
                    var rest = code[...]
                    while let r = rest.range(of: call) {
                        // `folder.rename(` and `file.truncate(` are the confined API; `isZeroChunk(` is no `link(`.
                        let before = rest[..<r.lowerBound].last
                        let declaresCase = code[..<r.lowerBound].trimmingCharacters(in: .whitespaces).hasSuffix("case")
                        if before != "." && !(before?.isLetter ?? false) && !(before?.isNumber ?? false) && before != "_" && !declaresCase {
                            XCTFail("\(name):\(number + 1) calls \(call) directly: \(line.trimmingCharacters(in: .whitespaces))")
                        }
                        rest = rest[r.upperBound...]
                    }
                }
            }
            checked += 1
        }
        XCTAssertGreaterThanOrEqual(checked, 9, "found the replication sources: \(guarded)")
    }
}
