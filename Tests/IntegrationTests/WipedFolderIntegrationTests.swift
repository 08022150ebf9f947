import Foundation
import XCTest

/// "A wiped or replaced folder never becomes deletions", and "index damage": real daemons on
/// loopback, the folder wiped, emptied or its index garbled under them.
final class WipedFolderIntegrationTests: XCTestCase, ClusterTesting {
    private let fm = FileManager.default

    /// 25 files (5 of them in a subdirectory) on A, synced to B.
    private func populated(_ name: String) throws -> [DaemonHarness] {
        let (d, _) = try cluster(2, name: name)
        let a = d[0].root + "/data"
        try fm.createDirectory(atPath: a + "/sub", withIntermediateDirectories: true)
        for i in 0..<20 { try Data("file \(i)".utf8).write(to: URL(fileURLWithPath: a + "/f\(i).txt")) }
        for i in 0..<5 { try Data("nested \(i)".utf8).write(to: URL(fileURLWithPath: a + "/sub/n\(i).txt")) }
        try waitInSync(d[0])
        XCTAssertEqual(tree(d[1].root + "/data"), tree(a))
        return d
    }

    private func state(_ h: DaemonHarness) -> String { (try? h.status().folders.first?.state) ?? "" }

    /// Polls until `condition` holds, for at most `seconds`.
    @discardableResult
    private func eventually(_ seconds: Double, _ condition: () -> Bool) -> Bool {
        let deadline = Date().addingTimeInterval(seconds)
        while Date() < deadline {
            if condition() { return true }
            usleep(100_000)
        }
        return condition()
    }

    /// `rm -rf` the folder under the running daemon, wait until it noticed (paused).
    private func wipe(_ h: DaemonHarness) throws {
        try fm.removeItem(atPath: h.root + "/data")
        XCTAssertTrue(eventually(10) { state(h) == "error" }, "the wiped folder pauses\n\(h.daemonLog.suffix(2000))")
    }

    func test_wipedFolder_markerRecreated_resumesByItself_andGetsEveryFileBack() throws {
        let d = try populated("wipe-live")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let before = tree(a)
        try wipe(d[1])
        try fm.createDirectory(atPath: b + "/.syncd", withIntermediateDirectories: true)   // the user guide's way out
        XCTAssertTrue(eventually(15) { tree(b) == before }, "B got every file back without a restart: \(tree(b).count) of \(before.count)\n\(d[1].daemonLog.suffix(3000))")
        XCTAssertEqual(tree(a), before, "A lost nothing")
        // Resumed for real: a file written now is indexed and reaches A.
        try Data("after".utf8).write(to: URL(fileURLWithPath: b + "/after.txt"))
        XCTAssertTrue(eventually(10) { fm.fileExists(atPath: a + "/after.txt") }, "\(d[1].daemonLog.suffix(2000))")
        XCTAssertTrue(eventually(10) { ["idle", "syncing", "in sync"].contains(state(d[1])) }, "the folder leaves the unknown state: \(state(d[1]))")
        try waitInSync(d[1])
        XCTAssertEqual(tree(a).count, before.count + 1)
    }

    func test_wipedFolder_markerRecreated_restart_getsEveryFileBack() throws {
        let d = try populated("wipe-restart")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let before = tree(a)
        try wipe(d[1])
        d[1].stopDaemon()
        try fm.createDirectory(atPath: b + "/.syncd", withIntermediateDirectories: true)
        try d[1].startDaemon(extra: ["--join", try XCTUnwrap(d[0].status().listen)])
        XCTAssertTrue(eventually(20) { tree(b) == before }, "B got every file back: \(tree(b).count) of \(before.count)\n\(d[1].daemonLog.suffix(3000))")
        XCTAssertEqual(tree(a), before, "A lost nothing")
        try waitInSync(d[1])
        XCTAssertEqual(tree(a), before)
    }

    /// The marker is intact, but a scan finds 20 of the 25 files gone at once: that is a replaced
    /// or half-restored folder, not 20 deletions to announce.
    func test_scanFindingMostFilesMissing_pullsThemBack_insteadOfDeletingThemEverywhere() throws {
        let d = try populated("most-missing")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let before = tree(a)
        d[1].stopDaemon()
        for i in 0..<20 { try fm.removeItem(atPath: b + "/f\(i).txt") }
        try d[1].startDaemon(extra: ["--join", try XCTUnwrap(d[0].status().listen)])
        XCTAssertTrue(eventually(20) { tree(b) == before }, "B pulled them back: \(tree(b).count) of \(before.count)\n\(d[1].daemonLog.suffix(3000))")
        XCTAssertEqual(tree(a), before, "A kept them")
        try waitInSync(d[1])
        XCTAssertEqual(tree(a), before)
    }

    /// The same deletions, confirmed with `syncd accept-deletions`, do reach the peer.
    func test_acceptDeletions_recordsTheMissingFilesAsDeleted_andThePeerDeletesThem() throws {
        let d = try populated("accept")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let bListen = try XCTUnwrap(d[1].status().listen)
        d[0].stopDaemon()   // A away: nothing can be pulled back meanwhile
        for i in 0..<20 { try fm.removeItem(atPath: b + "/f\(i).txt") }
        XCTAssertTrue(eventually(10) { state(d[1]) == "unknown" }, "most files gone at once: unknown, not deleted (\(state(d[1])))")
        let status = try d[1].cli(["status"]).stdout
        XCTAssertTrue(status.contains("accept-deletions"), "status names the way to confirm: \(status)")
        let accepted = try d[1].cli(["accept-deletions", b])
        XCTAssertEqual(accepted.status, 0, accepted.stderr)
        XCTAssertTrue(accepted.stdout.contains("20"), accepted.stdout)
        XCTAssertTrue(eventually(10) { ["idle", "syncing", "in sync"].contains(state(d[1])) }, state(d[1]))
        try d[0].startDaemon(extra: ["--join", bListen])
        // A receives most of its files' deletions from a peer that holds few: its own guard holds
        // them until A's user confirms too.
        XCTAssertTrue(eventually(20) { ((try? d[0].cli(["status", "--json"]).stdout) ?? "").contains("would delete 20") },
                      "A holds the mass deletion: \(d[0].daemonLog.suffix(2000))")
        XCTAssertEqual(tree(a).count, 26, "nothing deleted on A before its user confirms")
        XCTAssertNotEqual(try d[0].cli(["wait", a, "--timeout", "1"]).status, 0, "not in sync while held")
        XCTAssertEqual(state(d[0]), "syncing", "status does not say idle or in sync while a batch is held")
        XCTAssertEqual(try d[0].cli(["accept-deletions", a]).status, 0)
        XCTAssertTrue(eventually(20) { tree(a).count == 6 }, "A deleted the 20 files: \(tree(a).keys.sorted())\n\(d[0].daemonLog.suffix(2000))")
        XCTAssertEqual(tree(a), tree(b))
        let trash = try fm.subpathsOfDirectory(atPath: a + "/.syncd/trash")
        XCTAssertTrue(trash.contains { $0.hasSuffix("f3.txt") }, "into A's trash: \(trash)")
    }

    func test_damagedIndex_isRefusedWithTheWayOut_andRebuildIndexResyncsWithoutDeletingOnPeers() throws {
        let d = try populated("damaged")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let before = tree(a)
        let aListen = try XCTUnwrap(d[0].status().listen)
        d[1].stopDaemon()
        for i in 0..<3 { try fm.removeItem(atPath: b + "/f\(i).txt") }   // gone while the index was broken
        let index = d[1].home + "/index.db"
        try garble(index, keepingFirstPages: 4)   // the folder table survives, the file table does not
        let damaged = try XCTUnwrap(fm.contents(atPath: index))

        let refused = try d[1].cli(["daemon", "--home", d[1].home, "--listen", "127.0.0.1:0", "--no-lan-beacon"])
        XCTAssertNotEqual(refused.status, 0)
        XCTAssertTrue(refused.stderr.contains(index), refused.stderr)
        XCTAssertTrue(refused.stderr.contains("syncd daemon --rebuild-index"), refused.stderr)
        XCTAssertEqual(fm.contents(atPath: index), damaged, "the damaged index is left as it was")

        try d[1].startDaemon(extra: ["--rebuild-index", "--join", aListen])
        XCTAssertEqual(try d[1].status().folders.map(\.path), [b], "the folder is back\n\(d[1].daemonLog.suffix(2000))")
        let kept = try fm.contentsOfDirectory(atPath: d[1].home).filter { $0.hasPrefix("index.db.damaged-") }
        XCTAssertFalse(kept.isEmpty, "the damaged index is kept aside")
        XCTAssertTrue(eventually(20) { tree(b) == before }, "B re-synced: \(tree(b).count) of \(before.count)\n\(d[1].daemonLog.suffix(3000))")
        XCTAssertEqual(tree(a), before, "nothing deleted (or conflicted) on A")
        try waitInSync(d[1])
        XCTAssertEqual(tree(a), before)
    }

    /// Nothing of the old index can be read: the daemon says to add the folder again, and once
    /// added with its secret the folder re-syncs without deleting anything on the peer.
    func test_indexBeyondReading_rebuildStartsEmpty_andReaddingTheFolderDeletesNothing() throws {
        let (d, secret) = try cluster(2, name: "garbage")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        for i in 0..<12 { try Data("file \(i)".utf8).write(to: URL(fileURLWithPath: a + "/f\(i).txt")) }
        try waitInSync(d[0])
        let before = tree(a)
        let aListen = try XCTUnwrap(d[0].status().listen)
        d[1].stopDaemon()
        try fm.removeItem(atPath: b + "/f0.txt")
        try Data((0..<65536).map { UInt8(truncatingIfNeeded: $0 &* 7919 &+ 13) }).write(to: URL(fileURLWithPath: d[1].home + "/index.db"))
        try d[1].startDaemon(extra: ["--rebuild-index", "--join", aListen])
        XCTAssertEqual(try d[1].status().folders.count, 0)
        XCTAssertTrue(d[1].daemonLog.contains("syncd add PATH --secret SECRET"), d[1].daemonLog)
        let add = try d[1].cli(["add", b, "--secret", secret])
        XCTAssertEqual(add.status, 0, add.stderr)
        XCTAssertTrue(eventually(20) { tree(b) == before }, "B re-synced: \(tree(b).count) of \(before.count)\n\(d[1].daemonLog.suffix(3000))")
        XCTAssertEqual(tree(a), before, "nothing deleted (or conflicted) on A")
    }

    /// Overwrites everything after the first `pages` 4 KiB pages of a database with garbage.
    private func garble(_ path: String, keepingFirstPages pages: Int) throws {
        let handle = try XCTUnwrap(FileHandle(forUpdatingAtPath: path))
        let size = handle.seekToEndOfFile()
        XCTAssertGreaterThan(size, UInt64(pages * 4096), "an index with pages to damage")
        guard size > UInt64(pages * 4096) else { return handle.closeFile() }
        handle.seek(toFileOffset: UInt64(pages * 4096))
        handle.write(Data((0..<(Int(size) - pages * 4096)).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 17) }))
        handle.closeFile()
    }
}
