import Foundation
import XCTest

/// `on_apply` (`--on-apply`, and per folder in the config file): run after each batch applied
/// from a peer, with the changed paths on stdin and in SYNCD_PATHS.
final class ApplyHookIntegrationTests: XCTestCase {

    private func contents(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }

    /// `a` shares a new folder; `b` joins it as declared in a config file (with `folderHook`) or
    /// with `bExtra` on its command line.
    private func pair(_ name: String, folderHook: String? = nil, bExtra: [String] = []) throws -> (DaemonHarness, DaemonHarness) {
        let a = try DaemonHarness(name: name + "a")
        try a.startDaemon()
        let add = try a.cli(["add", a.root + "/data", "--secret"])
        let secret = String(add.stdout.split(whereSeparator: \.isWhitespace).last ?? "")
        let b = try DaemonHarness(name: name + "b")
        let config = b.root + "/syncd.yaml"
        var yaml = "folders:\n  - path: \(b.root)/data\n    secret: \(secret)\n"
        if let folderHook { yaml += "    on_apply: '\(folderHook)'\n" }
        try Data(yaml.utf8).write(to: URL(fileURLWithPath: config))
        chmod(config, 0o600)
        try b.startDaemon(extra: ["--join", try XCTUnwrap(a.status().listen), "--config", config] + bExtra)
        return (a, b)
    }

    func test_onApply_perFolder_getsTheAppliedPaths_onStdinAndInTheEnvironment() throws {
        let out = NSTemporaryDirectory() + "syncd-hook-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: out) }
        // The daemon-wide hook is overridden by the folder's own.
        let hook = "{ echo \"folder=$SYNCD_FOLDER count=$SYNCD_PATH_COUNT peer=$SYNCD_PEER\"; echo stdin:; cat; echo env:; printf %s \"$SYNCD_PATHS\"; echo end; } >> \(out)"
        let (a, b) = try pair("hook", folderHook: hook, bExtra: ["--on-apply", "echo wrong >> \(out)"])
        try FileManager.default.createDirectory(atPath: a.root + "/data/sub", withIntermediateDirectories: true)
        try Data("one\n".utf8).write(to: URL(fileURLWithPath: a.root + "/data/one.txt"))
        try Data("two\n".utf8).write(to: URL(fileURLWithPath: a.root + "/data/sub/two.txt"))
        let wait = try b.cli(["wait", b.root + "/data", "--timeout", "30"])
        XCTAssertEqual(wait.status, 0, wait.stderr)
        XCTAssertTrue(poll(15) { contents(out).contains("one.txt") && contents(out).contains("sub/two.txt") && contents(out).hasSuffix("end\n") },
                      contents(out) + b.daemonLog)
        let text = contents(out)
        XCTAssertFalse(text.contains("wrong"), "the folder's own hook ran, not the daemon-wide one: \(text)")
        XCTAssertTrue(text.contains("folder=\(b.root)/data "), text)
        XCTAssertTrue(text.contains("peer=\(try a.status().device)"), text)
        // Each run lists its paths once on stdin and once in SYNCD_PATHS, one per line.
        let stdinPaths = text.components(separatedBy: "stdin:\n").dropFirst().flatMap { $0.components(separatedBy: "env:\n")[0].split(separator: "\n") }
        let envPaths = text.components(separatedBy: "env:\n").dropFirst().flatMap { $0.components(separatedBy: "end\n")[0].split(separator: "\n") }
        XCTAssertEqual(Set(stdinPaths.map(String.init)), ["one.txt", "sub", "sub/two.txt"], text)
        XCTAssertEqual(stdinPaths.sorted(), envPaths.sorted(), text)
        XCTAssertTrue(b.daemonLog.contains("on_apply hook of \(b.root)/data ran for"), b.daemonLog)
    }

    /// A hook that outlives its timeout is stopped, and the same paths are passed again after a backoff.
    func test_onApply_timeout_stopsTheHook_andRetriesItsPathsAfterABackoff() throws {
        let marks = NSTemporaryDirectory() + "syncd-hook-\(UUID().uuidString.prefix(8))"
        defer { try? FileManager.default.removeItem(atPath: marks) }
        let hook = "echo start >> \(marks); cat >> \(marks); sleep 30; echo finished >> \(marks)"
        let (a, b) = try pair("hooktime", bExtra: ["--on-apply", hook, "--on-apply-timeout", "1"])
        try Data("x\n".utf8).write(to: URL(fileURLWithPath: a.root + "/data/x.txt"))
        // Two runs stopped (1 s each), a backoff of 1 s and then of 2 s.
        XCTAssertTrue(poll(30) { b.daemonLog.contains("failed; next run in 2 s with the same paths") }, contents(marks) + b.daemonLog)
        let text = contents(marks)
        let runs = text.components(separatedBy: "start\n").count - 1, listed = text.components(separatedBy: "x.txt\n").count - 1
        XCTAssertGreaterThanOrEqual(listed, 2, "the second run got the first run's path again: \(text)")
        XCTAssertTrue(listed == runs || listed == runs - 1, "every run got the path (the last may be reading it): \(text)")
        XCTAssertFalse(text.contains("finished"), "the hook was stopped: \(text)")
        XCTAssertTrue(b.daemonLog.contains("on_apply hook of \(b.root)/data ran longer than 1 s; stopped"), b.daemonLog)
        XCTAssertTrue(b.daemonLog.contains("failed; next run in 1 s with the same paths"), b.daemonLog)
        XCTAssertTrue(b.daemonLog.contains("failed; next run in 2 s with the same paths"), b.daemonLog)
        b.stopDaemon()
        // The hook's process group was stopped with it: no `sleep 30` of this hook is left.
        let ps = Process()
        ps.executableURL = URL(fileURLWithPath: "/usr/bin/pgrep")
        ps.arguments = ["-f", marks]
        ps.standardOutput = FileHandle.nullDevice
        try ps.run()
        ps.waitUntilExit()
        XCTAssertEqual(ps.terminationStatus, 1, "no process of the hook is left")
    }
}
