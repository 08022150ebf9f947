import Foundation
import SyncCore
import SyncSecurity
import SyncWire
import XCTest

/// Inputs that public bug reports against file synchronizers describe, with real daemons: paths
/// through symlinks, objects that change kind, times before 1970, sparse files.
extension ReplicationIntegrationTests {
    private func write(_ text: String, _ path: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    /// A symlink on A that later becomes a real directory with a file in it: B must never write
    /// that file through its own old copy of the link — not outside the folder, not into the
    /// directory inside the folder the link pointed at.
    func test_symlinkReplacedByDirectory_neverWritesThroughTheOldLink() throws {
        let (d, _) = try cluster(2, name: "escape")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let outside = NSTemporaryDirectory() + "syncd-it-outside-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: outside) }
        let fm = FileManager.default
        try fm.createDirectory(atPath: outside, withIntermediateDirectories: true)
        try write("untouched", outside + "/keep.txt")
        try fm.createDirectory(atPath: a + "/two", withIntermediateDirectories: true)
        try write("two's own", a + "/two/keep.txt")
        try fm.createSymbolicLink(atPath: a + "/one", withDestinationPath: outside)   // absolute, out of the folder
        try fm.createSymbolicLink(atPath: a + "/inner", withDestinationPath: "two")   // relative, inside it
        try waitInSync(d[0])
        XCTAssertEqual(tree(b)["one"], "link " + outside)
        XCTAssertEqual(tree(b)["inner"], "link two")

        for name in ["one", "inner"] {
            try fm.removeItem(atPath: a + "/" + name)
            try fm.createDirectory(atPath: a + "/" + name, withIntermediateDirectories: true)
            try write("evil", a + "/" + name + "/evil.txt")
        }
        try waitInSync(d[0])
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: outside), ["keep.txt"], "B wrote outside its folder")
        XCTAssertEqual(try String(contentsOfFile: outside + "/keep.txt", encoding: .utf8), "untouched")
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: b + "/two"), ["keep.txt"], "B wrote through its old link into two/")
        XCTAssertEqual(tree(b), tree(a))
        XCTAssertEqual(tree(b)["one"], "dir 755")
        XCTAssertEqual(try String(contentsOfFile: b + "/one/evil.txt", encoding: .utf8), "evil")
        let trash = try fm.subpathsOfDirectory(atPath: b + "/.syncd/trash")
        XCTAssertTrue(trash.contains { $0.hasSuffix("/one") } && trash.contains { $0.hasSuffix("/inner") },
                      "the replaced links are in the trash: \(trash)")
        // Nor did the new tree travel back and change A's two/.
        XCTAssertEqual(try fm.contentsOfDirectory(atPath: a + "/two"), ["keep.txt"])
    }

    /// Every change of kind at a path — file, directory, symlink, each into each other, and one
    /// inside a renamed directory — reaches the peer in one pass; the old objects go to the trash.
    func test_pathsThatChangeKind_areReplaced_andTheOldObjectsTrashed() throws {
        let (d, _) = try cluster(2, name: "kind")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let fm = FileManager.default
        func mkdir(_ p: String) throws { try fm.createDirectory(atPath: a + "/" + p, withIntermediateDirectories: true) }
        func link(_ p: String, _ target: String) throws { try fm.createSymbolicLink(atPath: a + "/" + p, withDestinationPath: target) }
        try write("file", a + "/f2d")
        try mkdir("d2f/s"); try write("1", a + "/d2f/a"); try write("2", a + "/d2f/s/c")
        try link("l2f", "f2d")
        try write("file", a + "/f2l")
        try mkdir("d2l"); try write("3", a + "/d2l/x")
        try link("l2d", "f2d")
        try mkdir("ren"); try write("k as a file", a + "/ren/k")
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a))

        try fm.removeItem(atPath: a + "/f2d"); try mkdir("f2d"); try write("inside", a + "/f2d/in")
        try fm.removeItem(atPath: a + "/d2f"); try write("now a file", a + "/d2f")
        try fm.removeItem(atPath: a + "/l2f"); try write("was a link", a + "/l2f")
        try fm.removeItem(atPath: a + "/f2l"); try link("f2l", "d2f")
        try fm.removeItem(atPath: a + "/d2l"); try link("d2l", "l2f")
        try fm.removeItem(atPath: a + "/l2d"); try mkdir("l2d"); try write("4", a + "/l2d/y")
        try fm.moveItem(atPath: a + "/ren", toPath: a + "/ren2")
        try fm.removeItem(atPath: a + "/ren2/k"); try mkdir("ren2/k"); try write("5", a + "/ren2/k/z")
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a), "B holds every new kind")
        let trash = try fm.subpathsOfDirectory(atPath: b + "/.syncd/trash")
        for old in ["d2f/a", "d2f/s/c", "d2l/x"] {
            XCTAssertTrue(trash.contains { $0.hasSuffix(old) }, "\(old) is in B's trash: \(trash)")
        }
        XCTAssertEqual(d[1].daemonLog.components(separatedBy: "will retry").count, 1, "applied without retries: \(d[1].daemonLog.suffix(3000))")
    }

    /// A modification time before 1970 with a fraction of a second arrives exactly.
    func test_timeBefore1970_withAFraction_arrivesExactly() throws {
        let (d, _) = try cluster(2, name: "mtime")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        try write("old", a + "/old.txt.tmp")
        var times = [timespec(tv_sec: 0, tv_nsec: Int(UTIME_NOW_VALUE)), timespec(tv_sec: -1, tv_nsec: 500_000_000)]
        XCTAssertEqual(utimensat(AT_FDCWD, a + "/old.txt.tmp", &times, 0), 0)
        XCTAssertEqual(rename(a + "/old.txt.tmp", a + "/old.txt"), 0)
        try waitInSync(d[0])
        var st = stat()
        XCTAssertEqual(lstat(b + "/old.txt", &st), 0)
        XCTAssertEqual(st.st_mtim.tv_sec, -1)
        XCTAssertEqual(st.st_mtim.tv_nsec, 500_000_000)
    }

    /// A sparse file keeps its holes on the peer: zero chunks are neither sent nor written.
    func test_sparseFile_arrivesSparse() throws {
        let (d, _) = try cluster(2, name: "sparse")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        let size: Int64 = 256 << 20
        let fd = open(a + "/sparse.img.tmp", O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        XCTAssertGreaterThanOrEqual(fd, 0)
        let island = [UInt8]((0..<(1 << 20)).map { UInt8(truncatingIfNeeded: $0 &* 7 &+ $0 >> 11) })
        XCTAssertEqual(island.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, off_t(100 << 20)) }, island.count)
        XCTAssertEqual(ftruncate(fd, off_t(size)), 0)
        close(fd)
        XCTAssertEqual(rename(a + "/sparse.img.tmp", a + "/sparse.img"), 0)
        try waitInSync(d[0], timeout: 120)
        var st = stat()
        XCTAssertEqual(lstat(b + "/sparse.img", &st), 0)
        XCTAssertEqual(Int64(st.st_size), size)
        XCTAssertLessThanOrEqual(Int64(st.st_blocks) * 512, 4 << 20, "B allocated \(Int64(st.st_blocks) * 512) bytes for 1 MiB of data")
        XCTAssertEqual(FileManager.default.contents(atPath: b + "/sparse.img"), FileManager.default.contents(atPath: a + "/sparse.img"))
    }
}

/// UTIME_NOW (sys/stat.h).
private let UTIME_NOW_VALUE = (1 << 30) - 1

extension SessionIntegrationTests {
    /// A peer holding the read-write secret sends entries signed with the folder key, crafted to
    /// lead the receiver out of its folder: links out, up, to the root and inside, then entries
    /// below those links. The receiver places the links and refuses everything below them; the
    /// outside and the linked-to directory inside stay exactly as they were, and the daemon lives on.
    func test_signedEntries_neverMakeTheReceiverTouchAPathOutsideItsFolder() throws {
        let h = try DaemonHarness(name: "beneath")
        try h.startDaemon()
        let secret = try addFolder(h, "data")
        let root = h.root + "/data", outside = h.root + "/outside"
        let fm = FileManager.default
        try fm.createDirectory(atPath: outside + "/tmp", withIntermediateDirectories: true)
        try Data("untouched".utf8).write(to: URL(fileURLWithPath: outside + "/keep.txt"))
        try fm.createDirectory(atPath: root + "/sub", withIntermediateDirectories: true)
        func snapshot(_ dir: String) -> [String] { ((try? fm.subpathsOfDirectory(atPath: dir)) ?? []).sorted() }
        let outsideBefore = snapshot(outside), subBefore = snapshot(root + "/sub")

        let evil = "syncd-evil-\(UUID().uuidString.prefix(8)).txt"   // a name no earlier run can have left in /tmp
        let keys = secret.keys
        let client = try PeerClient(port: try h.sessionPort(), folderID: keys.folderID, psk: keys.sessionPSK)
        XCTAssertTrue(client.handshake())
        var sequence: Int64 = 0
        func entry(_ path: String, _ kind: FileKind, target: String? = nil, deleted: Bool = false) -> FileEntry {
            sequence += 1
            return FileEntry(path: path, metadata: FileMetadata(kind: kind, size: 0, mode: kind == .directory ? 0o755 : 0o644, mtimeNs: 1,
                                                                ctimeNs: 0, inode: 0, symlinkTarget: target),
                             deleted: deleted, version: VersionVector().incremented(by: 99).incremented(by: 99), sequence: sequence)
        }
        func send(_ entries: [FileEntry]) throws {
            let manifest = try SealedManifest.seal(entries, origin: 3, indexID: 1, keys: manifestKeys(secret),
                                                   sequences: (UInt64(entries.first!.sequence), UInt64(entries.last!.sequence)))
            client.send(.index(manifest.encoded))
        }
        try send([entry("one", .symlink, target: outside), entry("dots", .symlink, target: ".."),
                  entry("rootlink", .symlink, target: "/"), entry("inner", .symlink, target: "sub")])
        XCTAssertEqual(client.next(where: { if case .indexAck = $0 { true } else { false } }),
                       .message(.indexAck(origin: 3, indexID: 1, sequence: 4)))
        XCTAssertEqual((try? fm.destinationOfSymbolicLink(atPath: root + "/one")), outside)
        try send([entry("one/evil.txt", .file), entry("one/tmp/evil.txt", .file), entry("one/newdir", .directory),
                  entry("one/link", .symlink, target: "x"), entry("one/keep.txt", .file, deleted: true),
                  entry("dots/outside/evil.txt", .file), entry("rootlink/tmp/" + evil, .file),
                  entry("inner/evil.txt", .file), entry("inner/deeper", .directory)])
        let deadline = Date().addingTimeInterval(10)
        while Date() < deadline && !h.daemonLog.contains("cannot apply") { usleep(20_000) }
        XCTAssertTrue(h.daemonLog.contains("cannot apply one/evil.txt"), h.daemonLog.suffix(3000).description)
        XCTAssertEqual(snapshot(outside), outsideBefore)
        XCTAssertEqual(try String(contentsOfFile: outside + "/keep.txt", encoding: .utf8), "untouched")
        XCTAssertEqual(snapshot(root + "/sub"), subBefore)
        XCTAssertFalse(fm.fileExists(atPath: "/tmp/" + evil))
        XCTAssertEqual(try h.cli(["status"]).status, 0, "the daemon lives on")
    }
}

extension UnprivilegedIntegrationTests {
    /// As the service user: a read-only directory arrives filled (its mode is set after its
    /// contents), later files still get into it, and one path the receiver cannot place (a
    /// directory another user owns) is reported and retried while the rest of its batch is applied.
    func test_readOnlyDirectory_arrivesFilled_andAPathThatCannotBePlacedNeverSinksItsBatch() throws {
        let (d, _) = try cluster(2, name: "rodir", unprivileged: true)
        let a = d[0].root + "/data", b = d[1].root + "/data"
        try d[0].write(Data("a".utf8), to: a + "/docs/a.txt")
        try d[0].write(Data("top".utf8), to: a + "/top.txt")
        XCTAssertEqual(chmod(a + "/docs", 0o555), 0)
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a))
        XCTAssertEqual(tree(b)["docs"], "dir 555")
        XCTAssertEqual(try String(contentsOfFile: b + "/docs/a.txt", encoding: .utf8), "a")

        // The writer opens the directory for a moment; the receiver's stays read-only throughout.
        XCTAssertEqual(chmod(a + "/docs", 0o755), 0)
        try d[0].write(Data("b".utf8), to: a + "/docs/b.txt")
        XCTAssertEqual(chmod(a + "/docs", 0o555), 0)
        try waitInSync(d[0])
        XCTAssertEqual(tree(b), tree(a))
        XCTAssertEqual(try String(contentsOfFile: b + "/docs/b.txt", encoding: .utf8), "b")

        guard geteuid() == 0 else { return }   // making a directory another user owns takes root
        let fm = FileManager.default
        try fm.createDirectory(atPath: b + "/blocked", withIntermediateDirectories: false)   // root's, 0755
        try waitInSync(d[1])
        XCTAssertEqual(tree(a)["blocked"], "dir 755")
        // One batch holding a path B cannot place and one it can: B is stopped while A writes both.
        let seed = try XCTUnwrap(d[0].status().listen)
        d[1].stopDaemon()
        try d[0].write(Data("x".utf8), to: a + "/blocked/x.txt")
        try d[0].write(Data("other".utf8), to: a + "/other.txt")
        try d[0].waitForFolder(timeout: 10, "A indexed both") { $0.localFiles == 5 }
        try d[1].startDaemon(extra: ["--join", seed])
        var deadline = Date().addingTimeInterval(20)
        while Date() < deadline && !fm.fileExists(atPath: b + "/other.txt") { usleep(50_000) }
        XCTAssertEqual(try? String(contentsOfFile: b + "/other.txt", encoding: .utf8), "other", "the rest of the batch arrived")
        XCTAssertFalse(fm.fileExists(atPath: b + "/blocked/x.txt"))
        deadline = Date().addingTimeInterval(10)
        var status = ""
        while Date() < deadline && !status.contains("blocked/x.txt") { status = (try? d[1].cli(["status", "--json"]).stdout) ?? ""; usleep(100_000) }
        XCTAssertTrue(status.contains("blocked/x.txt"), "status names the path that failed: \(status)")
        XCTAssertNotEqual(try d[0].cli(["wait", a, "--timeout", "2"]).status, 0, "not in sync while B cannot place a file")
        // Once the directory is B's to write, the retry places the file.
        try d[1].own(b + "/blocked")
        try waitInSync(d[0])
        XCTAssertEqual(try String(contentsOfFile: b + "/blocked/x.txt", encoding: .utf8), "x")
        XCTAssertEqual(tree(b), tree(a))
    }
}
