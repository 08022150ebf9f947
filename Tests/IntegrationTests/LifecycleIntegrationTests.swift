import Foundation
import XCTest

/// The daemon's lifecycle seen from outside: `syncd remove` stops everything of a folder, SIGHUP
/// reloads the configuration, SIGTERM stops it cleanly and promptly.
final class LifecycleIntegrationTests: XCTestCase, ClusterTesting {
    /// The peers `status --json` lists for `folder` on `h` (device → connected).
    private func peers(_ h: DaemonHarness, _ folder: String) throws -> [String: Bool] {
        struct Report: Decodable {
            struct Folder: Decodable {
                struct Peer: Decodable { var device: String; var connected: Bool }
                var path: String
                var peers: [Peer]?
            }
            var folders: [Folder]
        }
        let r = try h.cli(["status", "--json"])
        guard r.status == 0 else { throw DaemonHarness.HarnessError("status: \(r.stderr)") }
        let report = try JSONDecoder().decode(Report.self, from: Data(r.stdout.utf8))
        let peers = report.folders.first { $0.path == folder }?.peers ?? []
        return Dictionary(peers.map { ($0.device, $0.connected) }, uniquingKeysWith: { $0 || $1 })
    }


    func test_remove_closesTheFoldersSessions_andNothingArrivesAfterwards_andTheDaemonLivesOn() throws {
        let (d, secret) = try cluster(2, name: "remove")
        let a = d[0].root + "/data", b = d[1].root + "/data"
        try Data("before".utf8).write(to: URL(fileURLWithPath: a + "/before.txt"))
        try waitInSync(d[0])
        XCTAssertEqual(FileManager.default.contents(atPath: b + "/before.txt"), Data("before".utf8))
        let deviceB = try d[1].status().device

        let r = try d[1].cli(["remove", b])
        XCTAssertEqual(r.status, 0, r.stderr)
        XCTAssertEqual(try d[1].status().folders.map(\.path), [], "B no longer lists the folder")

        // A sees B go: the session closes and B stops announcing the folder.
        let gone = try poll(10) { try peers(d[0], a)[deviceB] == nil }
        XCTAssertTrue(gone, "A still lists B for the folder: \((try? peers(d[0], a)) ?? [:])\n\(d[1].daemonLog.suffix(3000))")

        try Data("after".utf8).write(to: URL(fileURLWithPath: a + "/after.txt"))
        try d[0].waitForFolder(timeout: 5, "A records the new file") { $0.localFiles == 2 }
        let arrived = poll(3) { FileManager.default.fileExists(atPath: b + "/after.txt") }
        XCTAssertFalse(arrived, "a file written on A after the remove reached B's folder")
        XCTAssertEqual(FileManager.default.contents(atPath: b + "/before.txt"), Data("before".utf8), "remove leaves the files")

        XCTAssertEqual(d[1].process?.isRunning, true, "B's daemon lives on: \(d[1].daemonLog.suffix(3000))")
        XCTAssertEqual(try d[1].cli(["status"]).status, 0)
        XCTAssertEqual(try d[1].status().folders.map(\.path), [])

        // Sharing it again works as a fresh join: what A wrote meanwhile arrives.
        let again = try d[1].cli(["add", b, "--secret", secret])
        XCTAssertEqual(again.status, 0, again.stderr)
        try waitInSync(d[1])
        XCTAssertEqual(FileManager.default.contents(atPath: b + "/after.txt"), Data("after".utf8))
    }

    /// SIGTERM while the receiver pulls a large file: it exits 0 within the stop timeout, no partial
    /// file appears at the target, and after a restart the two converge.
    func test_sigtermReceiverMidTransfer_exitsZero_andRestartConverges() throws {
        let (d, _) = try cluster(2, name: "term")
        // Written outside the folder, then renamed in: A only ever sees the complete file.
        let outside = d[0].root + "/big.tmp", big = d[0].root + "/data/big.bin"
        var bytes = Data(count: 96 << 20)
        bytes.withUnsafeMutableBytes { raw in
            var x: UInt64 = 7
            for i in stride(from: 0, to: raw.count, by: 8) { x = x &* 6364136223846793005 &+ 1442695040888963407; raw[i] = UInt8(truncatingIfNeeded: x >> 56) }
        }
        try bytes.write(to: URL(fileURLWithPath: outside))
        XCTAssertEqual(rename(outside, big), 0)
        let target = d[1].root + "/data/big.bin", tmp = d[1].root + "/data/.syncd/tmp"
        let pulling = poll(60) {
            ((try? FileManager.default.subpathsOfDirectory(atPath: tmp)) ?? []).contains { $0.contains("pull-") }
        }
        XCTAssertTrue(pulling, "the transfer was caught mid-way")
        let p = try XCTUnwrap(d[1].process)
        let sent = Date()
        kill(p.processIdentifier, SIGTERM)
        let exited = poll(40) { !p.isRunning }
        XCTAssertTrue(exited, "SIGTERM mid-transfer did not stop the daemon: \(d[1].daemonLog.suffix(3000))")
        guard exited else { return }
        p.waitUntilExit()
        XCTAssertLessThan(Date().timeIntervalSince(sent), 35, "shutdown waits at most the stop timeout")
        XCTAssertEqual(p.terminationReason, .exit)
        XCTAssertEqual(p.terminationStatus, 0, String(d[1].daemonLog.suffix(3000)))
        XCTAssertFalse(FileManager.default.fileExists(atPath: target)
                       && FileManager.default.contents(atPath: target) != bytes, "no partial file at the target path")

        try d[1].startDaemon(extra: ["--join", try XCTUnwrap(d[0].status().listen)])
        try waitInSync(d[0], timeout: 90)
        XCTAssertEqual(FileManager.default.contents(atPath: target), bytes)
    }

    /// SIGHUP reloads the config file: a folder no longer declared stops and leaves the index, a
    /// newly declared one starts, one shared with `syncd add` stays, the log level changes; the
    /// daemon keeps its pid and answers throughout.
    func test_sighup_reloadsTheConfigFile_foldersAndLogLevel_andSigtermExitsZeroPromptly() throws {
        let h = try DaemonHarness(name: "signals")
        func newSecret() throws -> String {
            let r = try h.cli(["secret"])
            XCTAssertEqual(r.status, 0, r.stderr)
            return String(r.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        }
        let first = try newSecret(), second = try newSecret()
        let config = h.root + "/syncd.yaml"
        func declare(_ name: String, _ secret: String, level: String) throws {
            let text = "log_level: \(level)\nfolders:\n  - path: \(h.root)/\(name)\n    secret: \(secret)\n"
            try Data(text.utf8).write(to: URL(fileURLWithPath: config))
            chmod(config, 0o600)
        }
        try declare("first", first, level: "info")
        try h.startDaemon(extra: ["--config", config])
        XCTAssertEqual(try h.cli(["add", h.root + "/data", "--secret"]).status, 0)
        let p = try XCTUnwrap(h.process)
        let pid = p.processIdentifier
        let before: Set<String> = [h.root + "/first", h.root + "/data"]
        XCTAssertEqual(Set(try h.status().folders.map(\.path)), before)

        try declare("second", second, level: "debug")
        kill(pid, SIGHUP)
        let after: Set<String> = [h.root + "/second", h.root + "/data"]
        let reloaded = try poll(10) { Set(try h.status().folders.map(\.path)) == after }
        XCTAssertTrue(reloaded, "after SIGHUP: \(h.daemonLog.suffix(2000))")
        XCTAssertTrue(p.isRunning, "SIGHUP stopped the daemon: \(h.daemonLog.suffix(2000))")
        XCTAssertEqual(h.process?.processIdentifier, pid)
        XCTAssertTrue(h.daemonLog.contains("reload: log level debug"), String(h.daemonLog.suffix(2000)))
        XCTAssertTrue(h.daemonLog.contains("reload: folder \(h.root)/first is no longer declared"), String(h.daemonLog.suffix(2000)))
        XCTAssertTrue(FileManager.default.fileExists(atPath: h.root + "/first/.syncd"), "a folder no longer declared keeps its files")

        // A file that cannot be read changes nothing.
        try Data("folders: [".utf8).write(to: URL(fileURLWithPath: config))
        kill(pid, SIGHUP)
        let kept = poll(10) { h.daemonLog.contains("the configuration in use is kept") }
        XCTAssertTrue(kept, String(h.daemonLog.suffix(2000)))
        XCTAssertEqual(Set(try h.status().folders.map(\.path)), after)

        let sent = Date()
        kill(p.processIdentifier, SIGTERM)
        let exited = poll(10) { !p.isRunning }
        XCTAssertTrue(exited, "SIGTERM did not stop the daemon within 10 s: \(h.daemonLog.suffix(2000))")
        guard exited else { return }
        p.waitUntilExit()
        XCTAssertLessThan(Date().timeIntervalSince(sent), 5, "SIGTERM took too long")
        XCTAssertEqual(p.terminationReason, .exit, "exited by itself, not killed by the signal")
        XCTAssertEqual(p.terminationStatus, 0, String(h.daemonLog.suffix(2000)))
        XCTAssertTrue(h.daemonLog.contains("stopped"), String(h.daemonLog.suffix(2000)))
    }
}
