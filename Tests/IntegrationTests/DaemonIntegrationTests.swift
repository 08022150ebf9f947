import Foundation
import SyncStore
import XCTest

/// End-to-end tests with the real daemon process, real inotify and the real SQLite index.
final class DaemonIntegrationTests: XCTestCase {
    private func write(_ path: String, _ text: String) throws {
        try Data(text.utf8).write(to: URL(fileURLWithPath: path))
    }

    func test_statusFollowsEveryKindOfChangeWithinASecond() throws {
        let h = try DaemonHarness(name: "follow")
        try h.startDaemon()
        let dir = h.root + "/data"
        let add = try h.cli(["add", dir, "--secret"])
        XCTAssertEqual(add.status, 0, add.stderr)
        let secret = try XCTUnwrap(add.stdout.split(whereSeparator: \.isWhitespace).last.map(String.init))
        XCTAssertTrue(secret.hasPrefix("syncd-rw-"), add.stdout)
        XCTAssertTrue(FileManager.default.fileExists(atPath: dir + "/.syncd"), "a missing folder is created with its state dir")

        let initial = try XCTUnwrap(h.waitForFolder(timeout: 5, "initial scan") { $0.state == "idle" })
        XCTAssertEqual(initial.access, "read-write")
        XCTAssertEqual(initial.localFiles, 0)

        try write(dir + "/a.txt", "hello")
        let a = try XCTUnwrap(h.waitForFolder("create a file") { $0.localFiles == 1 && $0.localBytes == 5 })

        try write(dir + "/a.txt", "hello, world")
        let b = try XCTUnwrap(h.waitForFolder("modify a file") { $0.localBytes == 12 })
        XCTAssertGreaterThan(b.sequence, a.sequence)

        try FileManager.default.createDirectory(atPath: dir + "/sub/deeper", withIntermediateDirectories: true)
        try write(dir + "/sub/deeper/b.txt", "bee")
        try h.waitForFolder("create directories and a nested file") { $0.localFiles == 2 && $0.localDirectories == 2 && $0.localBytes == 15 }

        try FileManager.default.moveItem(atPath: dir + "/sub", toPath: dir + "/moved")
        try h.waitForFolder("rename a directory") { $0.localFiles == 2 && $0.localDirectories == 2 }
        try write(dir + "/moved/deeper/c.txt", "sea")
        try h.waitForFolder("write inside the renamed directory") { $0.localFiles == 3 && $0.localBytes == 18 }

        try FileManager.default.moveItem(atPath: dir + "/a.txt", toPath: dir + "/moved/a-renamed.txt")
        try h.waitForFolder("rename a file") { $0.localFiles == 3 && $0.localBytes == 18 }

        try FileManager.default.createSymbolicLink(atPath: dir + "/link", withDestinationPath: "/etc/passwd")
        try h.waitForFolder("create a symlink (recorded, not followed)") { $0.localFiles == 4 && $0.localBytes == 18 }

        try FileManager.default.removeItem(atPath: dir + "/moved")
        let end = try XCTUnwrap(h.waitForFolder("delete a directory tree") { $0.localFiles == 1 && $0.localDirectories == 0 && $0.localBytes == 0 })

        h.stopDaemon()
        let store = try IndexStore(path: h.home + "/index.db")
        let folder = try XCTUnwrap(store.folders().first)
        XCTAssertEqual(try store.verify(folder: folder.id), [])
        XCTAssertEqual(folder.sequence, end.sequence)
        XCTAssertEqual(try store.entry(folder: folder.id, path: "moved/a-renamed.txt")?.deleted, true)
        XCTAssertEqual(try store.entry(folder: folder.id, path: "link")?.metadata.symlinkTarget, "/etc/passwd")
        XCTAssertEqual(try store.livePaths(folder: folder.id, under: ""), ["link"])
    }

    func test_badInput_givesClearErrorsAndChangesNothing() throws {
        let h = try DaemonHarness(name: "bad")
        let notRunning = try h.cli(["add", h.root + "/x", "--secret"])
        XCTAssertNotEqual(notRunning.status, 0)
        XCTAssertTrue(notRunning.stderr.contains("not running"), notRunning.stderr)

        try h.startDaemon()
        let good = try h.cli(["secret"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        var typo = Array(good)
        typo[20] = typo[20] == "a" ? "b" : "a"
        let bad = try h.cli(["add", h.root + "/typo", "--secret", String(typo)])
        XCTAssertNotEqual(bad.status, 0)
        XCTAssertTrue(bad.stderr.lowercased().contains("secret") || bad.stderr.lowercased().contains("mistyped"), bad.stderr)
        XCTAssertFalse(FileManager.default.fileExists(atPath: h.root + "/typo"), "nothing is created for a bad secret")

        XCTAssertEqual(try h.cli(["add", h.root + "/data", "--secret", good]).status, 0)
        let again = try h.cli(["add", h.root + "/data", "--secret"])
        XCTAssertNotEqual(again.status, 0)
        XCTAssertTrue(again.stderr.contains("already"), again.stderr)
        let nested = try h.cli(["add", h.root + "/data/inner", "--secret"])
        XCTAssertNotEqual(nested.status, 0)
        XCTAssertTrue(nested.stderr.contains("inside"), nested.stderr)
        let outer = try h.cli(["add", h.root, "--secret"])
        XCTAssertNotEqual(outer.status, 0)
        XCTAssertTrue(outer.stderr.contains("contains") || outer.stderr.contains("home"), outer.stderr)
        let noSecret = try h.cli(["add", h.root + "/other"])
        XCTAssertNotEqual(noSecret.status, 0)
        XCTAssertEqual(try h.status().folders.count, 1)

        let removed = try h.cli(["remove", h.root + "/data"])
        XCTAssertEqual(removed.status, 0, removed.stderr)
        XCTAssertEqual(try h.status().folders.count, 0)
        XCTAssertNotEqual(try h.cli(["remove", h.root + "/data"]).status, 0)
    }

    func test_foldersPersistAcrossRestart_andIdIsStable() throws {
        let h = try DaemonHarness(name: "restart")
        try h.startDaemon()
        let id1 = try h.cli(["id"]).stdout
        XCTAssertEqual(try h.cli(["add", h.root + "/data", "--secret"]).status, 0)
        try write(h.root + "/data/f", "x")
        try h.waitForFolder(timeout: 5, "file indexed") { $0.localFiles == 1 }
        h.stopDaemon()
        let attrs = try FileManager.default.attributesOfItem(atPath: h.home + "/device.key")
        XCTAssertEqual((attrs[.posixPermissions] as? NSNumber)?.intValue, 0o600)

        try write(h.root + "/data/g", "changed while down")
        try h.startDaemon()
        XCTAssertEqual(try h.cli(["id"]).stdout, id1)
        try h.waitForFolder(timeout: 5, "change made while stopped is found at start") { $0.localFiles == 2 && $0.state == "idle" }
    }

    func test_kill9DuringInitialScan_thenRestart_givesConsistentCompleteIndex() throws {
        let h = try DaemonHarness(name: "kill9")
        let dir = h.root + "/tree"
        let files = 20_000
        for d in 0..<100 {
            try FileManager.default.createDirectory(atPath: "\(dir)/d\(d)", withIntermediateDirectories: true)
            for f in 0..<(files / 100) {
                FileManager.default.createFile(atPath: "\(dir)/d\(d)/f\(f)", contents: Data(repeating: UInt8(f & 255), count: 512 + f))
            }
        }
        try h.startDaemon()
        XCTAssertEqual(try h.cli(["add", dir, "--secret"]).status, 0)
        // Kill as soon as the scan has committed something but not everything.
        let deadline = Date().addingTimeInterval(30)
        var killedMidScan = false
        while Date() < deadline {
            if let f = try h.status().folders.first, f.sequence > 0 {
                killedMidScan = f.localFiles < files
                break
            }
            usleep(2_000)
        }
        h.stopDaemon(signal: SIGKILL)
        XCTAssertTrue(killedMidScan, "the scan finished before the kill; the test proves less than it should")

        try h.startDaemon()
        let done = try XCTUnwrap(h.waitForFolder(timeout: 60, "scan completes after restart") { $0.state == "idle" && $0.localFiles == files })
        XCTAssertEqual(done.localDirectories, 100)
        h.stopDaemon()
        let store = try IndexStore(path: h.home + "/index.db")
        let folder = try XCTUnwrap(store.folders().first)
        XCTAssertEqual(try store.verify(folder: folder.id), [])
        XCTAssertEqual(try store.stats(folder: folder.id).files, files)
    }

    func test_secretCommands_deriveAndRejectTypos() throws {
        let h = try DaemonHarness(name: "secret")
        let rw = try h.cli(["secret"]).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        XCTAssertTrue(rw.hasPrefix("syncd-rw-"))
        let ro = try h.cli(["secret", "--read-only", rw])
        XCTAssertEqual(ro.status, 0, ro.stderr)
        XCTAssertTrue(ro.stdout.hasPrefix("syncd-ro-"))
        let st1 = try h.cli(["secret", "--storage", rw]).stdout
        let st2 = try h.cli(["secret", "--storage", ro.stdout.trimmingCharacters(in: .whitespacesAndNewlines)]).stdout
        XCTAssertTrue(st1.hasPrefix("syncd-st-"))
        XCTAssertEqual(st1, st2, "the chain is one-way and deterministic: RW→S equals RW→RO→S")
        let wrong = try h.cli(["secret", "--read-only", String(rw.dropLast()) + (rw.last == "a" ? "b" : "a")])
        XCTAssertNotEqual(wrong.status, 0)
        XCTAssertTrue(wrong.stderr.contains("invalid secret"), wrong.stderr)
        XCTAssertNotEqual(try h.cli(["secret", "--read-only", st1.trimmingCharacters(in: .whitespacesAndNewlines)]).status, 0)
    }
}
