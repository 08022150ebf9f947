import Foundation
import XCTest

/// Runs the real `syncd` binary: a daemon process per home, and CLI commands against it.
final class DaemonHarness {
    static var binary: String {
        if let b = ProcessInfo.processInfo.environment["SYNCD_BIN"] { return b }
        // The test bundle lives next to the built products (.build/<config>/).
        let dir = URL(fileURLWithPath: CommandLine.arguments.first { $0.hasSuffix(".xctest") } ?? CommandLine.arguments[0])
            .deletingLastPathComponent()
        return dir.appendingPathComponent("syncd").path
    }

    let root: String
    let home: String
    private(set) var process: Process?

    init(name: String = "t") throws {
        root = NSTemporaryDirectory() + "syncd-it-\(name)-\(UUID().uuidString.prefix(8))"
        home = root + "/home"
        try FileManager.default.createDirectory(atPath: root, withIntermediateDirectories: true)
    }

    deinit {
        if let p = process, p.isRunning { kill(p.processIdentifier, SIGKILL); p.waitUntilExit() }
        try? FileManager.default.removeItem(atPath: root)
    }

    struct Result {
        var status: Int32
        var stdout: String
        var stderr: String
    }

    @discardableResult
    func cli(_ args: [String], timeout: TimeInterval = 60) throws -> Result {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = args
        var env = ProcessInfo.processInfo.environment
        env["SYNCD_HOME"] = home
        p.environment = env
        let out = Pipe(), err = Pipe()
        p.standardOutput = out
        p.standardError = err
        try p.run()
        let o = out.fileHandleForReading.readDataToEndOfFile()
        let e = err.fileHandleForReading.readDataToEndOfFile()
        p.waitUntilExit()
        return Result(status: p.terminationStatus, stdout: String(decoding: o, as: UTF8.self), stderr: String(decoding: e, as: UTF8.self))
    }

    /// Daemons in tests keep the LAN beacon off (so parallel clusters never meet) unless asked.
    func startDaemon(extra: [String] = [], beacon: Bool = false) throws {
        let p = Process()
        p.executableURL = URL(fileURLWithPath: Self.binary)
        p.arguments = ["daemon", "--home", home, "--listen", "127.0.0.1:0"] + (beacon ? [] : ["--no-lan-beacon"]) + extra
        let log = root + "/daemon.log"
        FileManager.default.createFile(atPath: log, contents: nil)
        let handle = FileHandle(forWritingAtPath: log)!
        handle.seekToEndOfFile()
        p.standardOutput = handle
        p.standardError = handle
        try p.run()
        process = p
        let deadline = Date().addingTimeInterval(30)
        while Date() < deadline {
            if try cli(["status"]).status == 0 { return }
            XCTAssertTrue(p.isRunning, "daemon exited early: \(daemonLog)")
            if !p.isRunning { throw CocoaError(.executableLoad) }
            usleep(50_000)
        }
        XCTFail("daemon did not open its control socket: \(daemonLog)")
    }

    var daemonLog: String { (try? String(contentsOfFile: root + "/daemon.log", encoding: .utf8)) ?? "" }

    func stopDaemon(signal sig: Int32 = SIGTERM) {
        guard let p = process else { return }
        kill(p.processIdentifier, sig)
        p.waitUntilExit()
        process = nil
    }

    struct Status: Decodable {
        struct Folder: Decodable {
            var path: String
            var folderId: String
            var access: String
            var state: String
            var localFiles: Int
            var localDirectories: Int
            var localBytes: Int64
            var sequence: Int64
        }
        var device: String
        var listen: String?
        var folders: [Folder]
    }

    /// The session port the daemon bound (it listens on 127.0.0.1:0 in tests).
    func sessionPort() throws -> Int {
        let listen = try XCTUnwrap(status().listen)
        return try XCTUnwrap(Int(listen.split(separator: ":").last ?? ""))
    }

    func status() throws -> Status {
        let r = try cli(["status", "--json"])
        guard r.status == 0 else { throw NSError(domain: "status", code: Int(r.status), userInfo: [NSLocalizedDescriptionKey: r.stderr]) }
        return try JSONDecoder().decode(Status.self, from: Data(r.stdout.utf8))
    }

    /// Polls `status --json` until `condition` holds for the first folder, or fails after `timeout`.
    @discardableResult
    func waitForFolder(timeout: TimeInterval = 1, _ what: String, file: StaticString = #filePath, line: UInt = #line,
                       _ condition: (Status.Folder) -> Bool) throws -> Status.Folder? {
        let deadline = Date().addingTimeInterval(timeout)
        var last: Status.Folder?
        repeat {
            last = try status().folders.first
            if let f = last, condition(f) { return f }
            usleep(10_000)
        } while Date() < deadline
        XCTFail("\(what): not reflected within \(timeout) s; last status \(String(describing: last))", file: file, line: line)
        return nil
    }
}
